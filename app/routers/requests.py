"""Data-subject requests: logged, verified, paused and resumed, extended, refused, listed soonest due first."""

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from app.deps import (
    AccessLogDep,
    DatabaseDep,
    KeysDep,
    ReadSessionDep,
    SessionDep,
    SignerDep,
    app_settings,
    require_scopes,
)
from app.errors import Forbidden
from app.models.common import problem_responses
from app.models.requests import (
    ClarifyIn,
    ExtendIn,
    HoldIn,
    HoldOut,
    HoldsOut,
    RefuseIn,
    RequestIn,
    RequestOut,
    RequestPage,
    RequestType,
    ResumeIn,
    Status,
    VerificationLinkOut,
    VerifyIn,
)
from app.responses import json_response
from app.security import Principal
from app.services import access as access_log
from app.services import requests

router = APIRouter(prefix="/v1/requests", tags=["requests"])
holds_router = APIRouter(prefix="/v1/subjects/{subject_id}/holds", tags=["requests"])
Writer = require_scopes("requests:write")


async def _reader(principal: Annotated[Principal, require_scopes()]) -> Principal:
    """Reading requests takes requests:write or consents:read."""
    if not (principal.has("requests:write") or principal.has("consents:read")):
        raise Forbidden("this needs the scope requests:write or consents:read")
    return principal


Reader = Depends(_reader)


def _actor(principal: Principal, request: Request) -> requests.Actor:
    return requests.Actor(principal.tenant, principal.client, app_settings(request).holidays_region)


@router.post("", status_code=201, response_model=RequestOut)
async def create_request(
    principal: Annotated[Principal, Writer], body: RequestIn, request: Request, session: SessionDep, keys: KeysDep
) -> RequestOut:
    """Log a request received by email, post, phone, the web or in person. Its clock starts on the day it arrived,
    or, for access, portability, erasure and rectification, on the day the person's identity is verified."""
    return await requests.create(session, keys, _actor(principal, request), body)


@router.get("", response_model=RequestPage)
async def list_requests(
    principal: Annotated[Principal, Reader],
    session: ReadSessionDep,
    status: Status | None = None,
    type: RequestType | None = None,
    due_before: Annotated[date | None, Query(description="only requests due before this day")] = None,
    cursor: Annotated[str | None, Query(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=requests.MAX_PAGE)] = 100,
) -> RequestPage:
    """Requests, the soonest due first (those waiting for verification, whose clock has not started, last)."""
    return await requests.page(
        session, tenant=principal.tenant, status=status, type=type, due_before=due_before, cursor=cursor, limit=limit
    )


@router.get("/{request_id}", response_model=RequestOut)
async def get_request(principal: Annotated[Principal, Reader], request_id: uuid.UUID, session: ReadSessionDep) -> RequestOut:
    """One request, with its log."""
    return await requests.get(session, tenant=principal.tenant, request_id=request_id)


@router.post("/{request_id}/verify", response_model=RequestOut, responses=problem_responses(409))
async def verify_request(
    principal: Annotated[Principal, Writer], request_id: uuid.UUID, body: VerifyIn, request: Request, session: SessionDep
) -> RequestOut:
    """The person's identity was checked: a request that waited for it starts its clock today."""
    return await requests.verify(session, _actor(principal, request), request_id, body)


@router.post("/{request_id}/verification-link", response_model=VerificationLinkOut, responses=problem_responses(409))
async def request_verification_link(
    principal: Annotated[Principal, Writer], request_id: uuid.UUID, request: Request, session: SessionDep
) -> VerificationLinkOut:
    """A link for the person to confirm the request themselves (method email_link), valid 7 days; a new one
    replaces the last. No SMTP relay is configured in this version, so the link is answered here to pass on."""
    page = str(request.url_for("verification_page"))
    return await requests.verification_link(session, _actor(principal, request), request_id, page=page)


@router.post("/{request_id}/clarify", response_model=RequestOut, responses=problem_responses(409))
async def clarify_request(
    principal: Annotated[Principal, Writer], request_id: uuid.UUID, body: ClarifyIn, request: Request, session: SessionDep
) -> RequestOut:
    """Ask the person a question: the clock stops until they answer."""
    return await requests.clarify(session, _actor(principal, request), request_id, body)


@router.post("/{request_id}/resume", response_model=RequestOut, responses=problem_responses(409))
async def resume_request(
    principal: Annotated[Principal, Writer], request_id: uuid.UUID, body: ResumeIn, request: Request, session: SessionDep
) -> RequestOut:
    """The person answered: the clock runs again, the due dates later by the days it stood still."""
    return await requests.resume(session, _actor(principal, request), request_id, body)


@router.post("/{request_id}/extend", response_model=RequestOut, responses=problem_responses(409))
async def extend_request(
    principal: Annotated[Principal, Writer], request_id: uuid.UUID, body: ExtendIn, request: Request, session: SessionDep
) -> RequestOut:
    """Extend to three months from the clock's start: once, before the due date, with the notice to the person."""
    return await requests.extend(session, _actor(principal, request), request_id, body)


@router.post("/{request_id}/refuse", response_model=RequestOut, responses=problem_responses(409))
async def refuse_request(
    principal: Annotated[Principal, Writer], request_id: uuid.UUID, body: RefuseIn, request: Request, session: SessionDep
) -> RequestOut:
    """Refuse, on one of the grounds the law allows, with what to tell the person."""
    return await requests.refuse(session, _actor(principal, request), request_id, body)


@router.post("/{request_id}/complete", response_model=RequestOut, responses=problem_responses(409))
async def complete_request(
    principal: Annotated[Principal, Writer], request_id: uuid.UUID, request: Request, session: SessionDep, keys: KeysDep
) -> RequestOut:
    """Carry the request out in one transaction; the answer's `outcome` says what was done and what was withheld."""
    return await requests.complete(session, keys, _actor(principal, request), request_id)


_EXPORT_OPENAPI = {"responses": {"200": {"content": {"application/json": {"schema": {"type": "object"}}}}}}


@router.get("/{request_id}/export", response_class=StreamingResponse, responses=problem_responses(409), openapi_extra=_EXPORT_OPENAPI)
async def export_request(
    principal: Annotated[Principal, Reader],
    request_id: uuid.UUID,
    session: ReadSessionDep,
    database: DatabaseDep,
    keys: KeysDep,
    log: AccessLogDep,
) -> StreamingResponse:
    """The export of a completed access or portability request: one JSON document, streamed. Recorded in the
    access log."""
    row = await requests.exportable(session, tenant=principal.tenant, request_id=request_id)
    await log.record(
        principal, action=access_log.SUBJECT_EXPORT, subject_id=row.subject_id, detail={"request_id": str(request_id)}
    )
    return StreamingResponse(
        requests.exports.document(database, keys, request=row), media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{requests.exports.filename(request_id)}"'},
    )


@router.get("/{request_id}/receipt", responses=problem_responses(409))
async def request_receipt(
    principal: Annotated[Principal, Reader], request_id: uuid.UUID, session: ReadSessionDep, signer: SignerDep
) -> Response:
    """A signed statement (JWS, the keys of /.well-known/jwks.json) of what was done and when, what was withheld
    and on which ground, with the head of the request's log."""
    return json_response(await requests.receipt(session, signer, tenant=principal.tenant, request_id=request_id))


@holds_router.post("", status_code=201, response_model=HoldOut)
async def place_hold(
    principal: Annotated[Principal, Writer], subject_id: uuid.UUID, body: HoldIn, session: SessionDep
) -> HoldOut:
    """Place a legal hold on a subject: an erasure keeps the held data until the last hold is released."""
    return await requests.holds.place(session, tenant=principal.tenant, subject_id=subject_id, actor=principal.client, body=body)


@holds_router.get("", response_model=HoldsOut)
async def list_holds(principal: Annotated[Principal, Reader], subject_id: uuid.UUID, session: ReadSessionDep) -> HoldsOut:
    """Every hold placed on the subject, released or not, oldest first."""
    return await requests.holds.of_subject(session, tenant=principal.tenant, subject_id=subject_id)


@holds_router.post("/{hold_id}/release", response_model=HoldOut, responses=problem_responses(409))
async def release_hold(
    principal: Annotated[Principal, Writer], subject_id: uuid.UUID, hold_id: uuid.UUID, session: SessionDep,
    request: Request,
) -> HoldOut:
    """Release a hold. When it was the last in force, an erasure completed in part under holds runs the rest now,
    logged on its request."""
    return await requests.release_hold(session, _actor(principal, request), subject_id=subject_id, hold_id=hold_id)
