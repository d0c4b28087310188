from typing import Annotated

from fastapi import APIRouter, Path, Request

from app.deps import AnyPrincipal, ReadSessionDep, SessionDep, require_scopes, services
from app.models.common import PURPOSE_KEY
from app.models.purposes import PurposeList, PurposeOut, PurposeWrite
from app.security import Principal
from app.services import purposes

router = APIRouter(prefix="/v1/purposes", tags=["purposes"])
KeyPath = Annotated[str, Path(pattern=PURPOSE_KEY)]


@router.put("/{key}", response_model=PurposeOut)
async def put_purpose(
    principal: Annotated[Principal, require_scopes("purposes:write")],
    request: Request,
    key: KeyPath,
    body: PurposeWrite,
    session: SessionDep,
) -> PurposeOut:
    """Create or change a purpose; `version` goes up by one on every change. A new `third_party`, or `"reconsent":
    true` (a material change), raises `consent_from_version` to the new version: earlier grants stop counting and
    checks answer `reconsent_required` until the person decides again."""
    changed = await purposes.put(session, tenant=principal.tenant, key=key, body=body)
    services(request).banner_views.forget(principal.tenant)  # a cookie purpose is a banner category
    return changed


@router.get("", response_model=PurposeList)
async def list_purposes(principal: AnyPrincipal, session: ReadSessionDep) -> PurposeList:
    """Every purpose of the tenant (any scope may read)."""
    found = await purposes.list_all(session, tenant=principal.tenant)
    return PurposeList(purposes=[purposes.to_out(p) for p in found])


@router.get("/{key}", response_model=PurposeOut)
async def get_purpose(principal: AnyPrincipal, key: KeyPath, session: ReadSessionDep) -> PurposeOut:
    """One purpose (any scope may read)."""
    return purposes.to_out(await purposes.get(session, tenant=principal.tenant, key=key))
