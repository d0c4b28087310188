from typing import Annotated

from fastapi import APIRouter, Request

from app.deps import AnyPrincipal, ReadSessionDep, SessionDep, require_scopes, services
from app.models.banners import BannerIn, BannerOut
from app.security import Principal
from app.services.banner import banners

router = APIRouter(prefix="/v1/banner", tags=["cookie banner"])


@router.get("", response_model=BannerOut)
async def get_banner_settings(principal: AnyPrincipal, session: ReadSessionDep) -> BannerOut:
    """The tenant's cookie banner: texts, privacy-policy link, GPC coverage and every policy version published."""
    return await banners.settings(session, tenant=principal.tenant)


@router.put("", response_model=BannerOut, responses={409: {"description": "That policy version was published before"}})
async def put_banner_settings(
    principal: Annotated[Principal, require_scopes("purposes:write")],
    request: Request,
    body: BannerIn,
    session: SessionDep,
) -> BannerOut:
    """Change the banner. A new `policy_version` is published; `material: true` asks every visitor again."""
    changed = await banners.put(session, tenant=principal.tenant, body=body)
    # This process's banner endpoints see the change at once; other processes within their cache's few seconds.
    services(request).banner_views.forget(principal.tenant)
    return changed
