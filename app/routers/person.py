"""The person's own pages (no JWT): the page of a data-subject request's verification link, and its confirmation."""

from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.deps import SessionDep, app_settings
from app.models.common import problem_responses
from app.models.requests import LinkVerifiedOut, LinkVerifyIn
from app.services import requests

router = APIRouter(tags=["the person"])
# The page is the same for everyone and holds nothing personal; it must never be framed (clickjacking) or cached
# with a token, which it never sees server-side anyway (the token is in the fragment).
PAGE_HEADERS = {
    "Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}


@router.get("/requests/verify", name="verification_page", response_class=HTMLResponse)
async def verification_page() -> HTMLResponse:
    """The page a verification link opens. Loading it confirms nothing (a mail scanner's GET does no harm): the
    person's press of its button POSTs the token from the link's fragment."""
    return HTMLResponse(_static("verify.html"), headers=PAGE_HEADERS)


@router.get("/requests/verify.js", include_in_schema=False)
async def verification_script() -> Response:
    return Response(_static("verify.js"), media_type="text/javascript; charset=utf-8", headers={"Cache-Control": "no-cache"})


@router.post("/v1/public/requests/verify", response_model=LinkVerifiedOut, responses=problem_responses(400, 404, 409, 422, 503))
async def verify_by_link(body: LinkVerifyIn, request: Request, session: SessionDep) -> LinkVerifiedOut:
    """The person confirms their request from the verification page: its clock starts today (method email_link).
    Confirming twice is fine; an unknown, replaced or expired link is a 404."""
    return await requests.verify_by_link(session, token=body.token, region=app_settings(request).holidays_region)


def _static(name: str) -> bytes:
    return resources.files("app").joinpath("static", name).read_bytes()
