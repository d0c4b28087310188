import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.deps import AccessLogDep, KeysDep, ReadSessionDep, SessionDep, require_scopes, services
from app.models.banners import DeviceLinkIn, DeviceLinkOut
from app.models.common import PURPOSE_KEY, SubjectRef, Timestamp
from app.models.consents import HistoryOut, SubjectConsentsOut
from app.models.subjects import SubjectOut
from app.responses import json_response
from app.security import Principal
from app.services import access as access_log
from app.services import subjects
from app.services.banner import devices
from app.services.ledger import reads as ledger

router = APIRouter(prefix="/v1/subjects", tags=["subjects"])
Reader = require_scopes("consents:read")


@router.post("/lookup", response_model=SubjectOut, responses={404: {"description": "No such subject"}})
async def lookup_subject(
    principal: Annotated[Principal, Reader],
    ref: SubjectRef,
    session: ReadSessionDep,
    keys: KeysDep,
    log: AccessLogDep,
) -> SubjectOut:
    """Find a subject by one identifier (sent in the body, never in the URL). Recorded in the access log."""
    found = await subjects.lookup(session, keys, tenant=principal.tenant, ref=ref)
    await log.record(principal, action=access_log.LOOKUP, subject_id=found.subject_id)
    return found


@router.get("/{subject_id}", response_model=SubjectOut)
async def get_subject(
    principal: Annotated[Principal, Reader],
    subject_id: uuid.UUID,
    session: ReadSessionDep,
    keys: KeysDep,
    log: AccessLogDep,
) -> SubjectOut:
    """A subject with its identifiers and flags. Recorded in the access log."""
    found = await subjects.get(session, keys, tenant=principal.tenant, subject_id=subject_id)
    await log.record(principal, action=access_log.SUBJECT, subject_id=subject_id)
    return found


@router.get("/{subject_id}/consents", response_model=SubjectConsentsOut)
async def get_consents(
    principal: Annotated[Principal, Reader],
    subject_id: uuid.UUID,
    request: Request,
    as_of: Annotated[Timestamp | None, Query(description="an instant with a timezone; default now (or known_at)")] = None,
    known_at: Annotated[
        Timestamp | None, Query(description="count only decisions recorded by this instant: what the ledger said then")
    ] = None,
) -> Response:
    """The decision standing per purpose and channel, now or as of a past instant, with expiry considered.

    "As of T" is by `captured_at`: the decisions captured at or before T, whenever they were recorded; a decision
    about a moment before T that arrives late changes the answer for T. `known_at` K leaves out what was recorded
    after K: what the ledger said at K. Recorded in the access log."""
    # What the lifespan built, read directly: each dependency costs FastAPI time on a hot read.
    built = services(request)
    return json_response(await ledger.standing(
        built.database, built.rule_cache, reader=principal, subject_id=subject_id, as_of=as_of, known_at=known_at
    ))


@router.get("/{subject_id}/history", response_model=HistoryOut)
async def get_history(
    principal: Annotated[Principal, Reader],
    subject_id: uuid.UUID,
    request: Request,
    purpose: Annotated[str | None, Query(pattern=PURPOSE_KEY)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9_-]+$")] = None,
) -> Response:
    """Every consent event of the subject, oldest first; follow `next_cursor` for the next page. Recorded in the
    access log."""
    return json_response(await ledger.events(
        services(request).database, reader=principal, subject_id=subject_id, purpose=purpose, limit=limit, cursor=cursor
    ))


@router.post(
    "/{subject_id}/identifiers", response_model=DeviceLinkOut,
    responses={409: {"description": "The device belongs to another person"}},
)
async def link_identifier(
    principal: Annotated[Principal, require_scopes("consents:write")],
    subject_id: uuid.UUID,
    body: DeviceLinkIn,
    session: SessionDep,
    keys: KeysDep,
) -> DeviceLinkOut:
    """Link a browser's device to this person (after a login): the device's cookie history joins theirs, the
    newest decision per purpose stands, and from then on the banner and checks read one history."""
    return await devices.link(
        session, keys, tenant=principal.tenant, subject_id=subject_id, device_id=body.device_id, actor=principal.client
    )
