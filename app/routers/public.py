"""The cookie banner's public endpoints (a publishable key, no JWT), the banner script and the demo shop page."""

import hashlib
from functools import lru_cache
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Header, Path, Request, Response
from fastapi.responses import HTMLResponse

from app.deps import KeysDep, PublicAccess, ReadSessionDep, services
from app.models.banners import DEVICE_ID, CookieConsentIn, CookieConsentsOut, CookieConsentsRecorded, PublicBannerOut
from app.responses import json_response
from app.services.banner import banners, cookie_consents

router = APIRouter(prefix="/v1/public", tags=["cookie banner"])
DeviceIdPath = Annotated[str, Path(pattern=DEVICE_ID, description="the device id consentd issued to the browser")]
IdempotencyKey = Annotated[str | None, Header(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")]
PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "GET, POST",
    "Access-Control-Allow-Headers": "Content-Type, Idempotency-Key",
    "Access-Control-Max-Age": "600",
}
NO_STORE = {"Cache-Control": "no-store"}


@router.get("/banner", response_model=PublicBannerOut)
async def get_banner(
    request: Request, grant: PublicAccess, session: ReadSessionDep, response: Response
) -> PublicBannerOut:
    """The banner's texts, its categories (the tenant's purposes of category `cookies`) and the policy version."""
    # Dependencies resolve in order: a refused request (401, 403, 429) never opens a transaction.
    response.headers.update(NO_STORE)
    return (await services(request).banner_views.get(session, tenant=grant.tenant)).config


@router.post("/cookie-consents", status_code=201, response_model=CookieConsentsRecorded)
async def post_cookie_consents(
    request: Request,
    grant: PublicAccess,
    body: CookieConsentIn,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Record a device's cookie choices (source `cookie_banner`). Without `device_id`, consentd issues one and
    answers it; an id it did not issue for this site is a 422. With `Sec-GPC: 1`, advertising and sharing
    categories not explicitly turned on are recorded as withdrawn (method `gpc`)."""
    visit = cookie_consents.Visit(
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
        referer=request.headers.get("referer"),
        gpc=request.headers.get("sec-gpc", "").strip() == "1",
    )
    # What the lifespan built, read directly: each dependency costs FastAPI time on a page view's write.
    built = services(request)
    status, answer = await cookie_consents.record(
        built.database, built.identifier_keys, built.banner_views, tenant=grant.tenant, banner_key=grant.key, body=body,
        visit=visit, idempotency_key=idempotency_key,
    )
    return json_response(answer, status_code=status, headers=NO_STORE)


@router.get("/cookie-consents/{device_id}", response_model=CookieConsentsOut)
async def get_cookie_consents(
    request: Request, device_id: DeviceIdPath, grant: PublicAccess, session: ReadSessionDep, keys: KeysDep,
    response: Response,
) -> CookieConsentsOut:
    """The device's standing choices, and whether the banner must ask again (`reprompt`); 422 for a device id
    consentd did not issue for this site."""
    response.headers.update(NO_STORE)
    view = await services(request).banner_views.get(session, tenant=grant.tenant)
    return await cookie_consents.status(session, keys, tenant=grant.tenant, view=view, device_id=device_id)


@router.options("/banner", status_code=204, include_in_schema=False)
@router.options("/cookie-consents", status_code=204, include_in_schema=False)
@router.options("/cookie-consents/{device_id}", status_code=204, include_in_schema=False)
async def preflight(_grant: PublicAccess) -> Response:
    """CORS preflight: allowed only for the key's origins (the Edge middleware adds Access-Control-Allow-Origin)."""
    return Response(status_code=204, headers=PREFLIGHT_HEADERS)


@lru_cache
def _static(name: str) -> bytes:
    return resources.files("app").joinpath("static", name).read_bytes()


@router.get("/banner.js", response_class=Response, responses={200: {"content": {"text/javascript": {}}}})
async def banner_js(request: Request) -> Response:
    """The embeddable banner: `<script src=".../v1/public/banner.js" data-key="pk_..." async></script>`."""
    script = _static("banner.js")
    etag = '"' + hashlib.sha256(script).hexdigest()[:32] + '"'
    headers = {
        "ETag": etag,
        "Cache-Control": "public, max-age=300",
        # Embeddable in pages that isolate themselves (COEP).
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(script, media_type="text/javascript; charset=utf-8", headers=headers)


demo_router = APIRouter(tags=["cookie banner"])


@demo_router.get(
    "/demo", response_class=HTMLResponse,
    responses={404: {"description": "The demo tenant has no key for this address", "content": {"text/html": {}}}},
)
async def demo_page(request: Request, session: ReadSessionDep) -> HTMLResponse:
    """A demo shop page using the banner against the `demo` tenant (`make run`, then open /demo)."""
    origin = banners.normalise_origin(f"{request.url.scheme}://{request.url.netloc}")
    key = await banners.demo_key(session, tenant=banners.DEMO_TENANT, origin=origin)
    if key is None:
        return HTMLResponse(
            "<!doctype html><meta charset=utf-8><title>consentd demo</title>"
            "<p>The demo tenant has no publishable key for this address. Run "
            f"<code>consentd banner-keys create --tenant demo --origin {origin}</code> and reload.</p>",
            status_code=404,
        )
    page = _static("demo.html").decode().replace("__CONSENTD_KEY__", key)
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})
