from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.deps import KeysDep, ReadSessionDep, SessionDep, require_scopes
from app.models.common import Channel
from app.models.suppressions import SuppressionPage, SuppressionsIn, SuppressionsRemoveIn, SuppressionsResult
from app.responses import json_response
from app.security import Principal
from app.services import suppressions

router = APIRouter(prefix="/v1/suppressions", tags=["suppressions"])


@router.put("", response_model=SuppressionsResult)
async def add_suppressions(
    principal: Annotated[Principal, require_scopes("consents:write")],
    body: SuppressionsIn,
    session: SessionDep,
    keys: KeysDep,
) -> SuppressionsResult:
    """Suppress identifiers on channels: checks answer `suppressed` for them, whatever their consents."""
    return await suppressions.add(session, keys, tenant=principal.tenant, actor=principal.client, body=body)


@router.post("/remove", response_model=SuppressionsResult)
async def remove_suppressions(
    principal: Annotated[Principal, require_scopes("consents:write")],
    body: SuppressionsRemoveIn,
    session: SessionDep,
    keys: KeysDep,
) -> SuppressionsResult:
    """Lift suppressions of identifiers on channels."""
    return await suppressions.remove(session, keys, tenant=principal.tenant, actor=principal.client, body=body)


@router.get("", response_model=SuppressionPage)
async def list_suppressions(
    principal: Annotated[Principal, require_scopes("consents:read")],
    session: ReadSessionDep,
    keys: KeysDep,
    cursor: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=suppressions.MAX_PAGE)] = 100,
    channel: Channel | None = None,
) -> Response:
    """Suppressed identifiers, page by page, each as PUT takes it (identifier, channels, reason)."""
    return json_response(
        await suppressions.page(session, keys, tenant=principal.tenant, cursor=cursor, limit=limit, channel=channel)
    )
