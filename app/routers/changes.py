from typing import Annotated

from fastapi import APIRouter, Query

from app.deps import ReadSessionDep, require_scopes
from app.models.changes import ChangesOut
from app.security import Principal
from app.services import changes

router = APIRouter(prefix="/v1/changes", tags=["changes"])


@router.get("", response_model=ChangesOut)
async def list_changes(
    session: ReadSessionDep,
    after: Annotated[str | None, Query(min_length=1, max_length=64, description="A cursor this feed returned")] = None,
    limit: Annotated[int, Query(ge=1, le=changes.MAX_PAGE)] = 1_000,
    principal: Principal = require_scopes("consents:read"),
) -> ChangesOut:
    """Every change of consent state, in the order to apply it. Follow `next_cursor`: no change is missed,
    even one committed late by a slower writer."""
    return await changes.page(session, tenant=principal.tenant, after=after, limit=limit)
