from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.deps import DatabaseDep, require_scopes
from app.models.changes import ChangesOut
from app.responses import json_response
from app.security import Principal
from app.services import changes

router = APIRouter(prefix="/v1/changes", tags=["changes"])


@router.get("", response_model=ChangesOut)
async def list_changes(
    principal: Annotated[Principal, require_scopes("consents:read")],
    database: DatabaseDep,
    after: Annotated[str | None, Query(min_length=1, max_length=64, description="A cursor this feed returned")] = None,
    limit: Annotated[int, Query(ge=1, le=changes.MAX_PAGE)] = 1_000,
) -> Response:
    """Every change of consent state, in the order to apply it. Follow `next_cursor`: no change is missed,
    even one committed late by a slower writer."""
    return json_response(await changes.page(database, tenant=principal.tenant, after=after, limit=limit))
