"""Data-subject requests: logged, verified, paused, resumed, extended and refused on the statutory clock.

Every action locks the request's row, checks that the request may take it, moves the request and appends an entry
to its log, in the caller's transaction: two actions on one request queue, and a retried one is refused by the
state the first left (an extension twice, a refusal of a refused request).
"""

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, NotFound, Unprocessable
from app.models.base import table_of, utcnow
from app.models.requests import (
    NEEDS_VERIFICATION,
    NOT_DUE,
    OPEN,
    ClarifyIn,
    DataRequest,
    ExtendIn,
    HoldOut,
    LinkVerifiedOut,
    RefuseIn,
    RequestIn,
    RequestLogEntry,
    RequestOut,
    RequestPage,
    ResumeIn,
    VerificationLinkOut,
    VerifyIn,
)
from app.security import Signer
from app.services import notifications, subjects
from app.services.audit import request_check
from app.services.audit.request_log import entry_hash
from app.services.kit.cursors import pack, unpack
from app.services.ledger import GENESIS
from app.services.ledger.consents import MAX_CLOCK_SKEW
from app.services.requests import completion, deadlines, holds
from app.services.subjects import IdentifierKeys

MAX_PAGE = 500
_REQUESTS = table_of(DataRequest)
_LOG = table_of(RequestLogEntry)


@dataclass(frozen=True)
class Actor:
    """Who acts (the token's client) and the bank holidays the clock counts by."""

    tenant: str
    client: str
    region: str


def _not_future(moment: datetime, now: datetime, loc: list[str | int]) -> datetime:
    """A moment that may not be after now (a client's clock may run MAX_CLOCK_SKEW ahead: taken as now)."""
    if moment > now + MAX_CLOCK_SKEW:
        raise Unprocessable("may not be in the future", loc=loc)
    return min(moment, now)


async def create(session: AsyncSession, keys: IdentifierKeys, actor: Actor, body: RequestIn) -> RequestOut:
    """Log a request. Its clock starts now (or at `received_at`), or when the person's identity is verified for the
    rights that need it; 404 for an unknown subject_id. A person consentd has never seen still gets a request."""
    now = utcnow()
    received = _not_future(body.received_at or now, now, ["body", "received_at"])
    verified_at = None
    if body.verified is not None:
        verified_at = _not_future(body.verified.at or now, now, ["body", "verified", "at"])
        if verified_at < received:
            raise Unprocessable("identity cannot be verified before the request was received", loc=["body", "verified", "at"])
    subject_id = await subjects.find(session, keys, tenant=actor.tenant, ref=body.subject, loc=("body", "subject"))
    if subject_id is None and body.subject.subject_id is not None:
        raise NotFound("subject", body.subject.subject_id)
    if body.type == "rectification":
        _valid_identifiers(keys, body.details or {})
        if subject_id is not None:
            await _addable(session, keys, tenant=actor.tenant, subject_id=subject_id, added=(body.details or {}).get("add"))
    # The identifier named, normalised, blind-indexed and sealed as a bulk write's (None for a subject_id).
    own = subjects.naming(keys, tenant=actor.tenant, ref=body.subject, identifiers=None, loc=("body",)).own
    row = DataRequest(
        tenant_id=actor.tenant, type=body.type, status="in_progress", subject_id=subject_id,
        id_type=own and own.kind, id_hash=own and own.id_hash, value_sealed=own and own.sealed, received_at=received,
        received_via=body.received_via, details=body.details,
    )
    entries = [("received", now, _received_note(body))]
    if body.verified is not None:
        row.verified_method, row.verified_at = body.verified.method, verified_at
        entries.append(("verified", now, f"method: {body.verified.method}"))
    if body.type in NEEDS_VERIFICATION and verified_at is None:
        row.status = "pending_verification"
    else:
        _start_clock(row, verified_at if body.type in NEEDS_VERIFICATION and verified_at else received, actor.region)
    session.add(row)
    await session.flush()
    log = [await _append(session, row, actor, action, at, note) for action, at, note in entries]
    await notifications.emit(session, tenant=actor.tenant, type="request.created", data=_event_data(row))
    return _out(row, log)


def _valid_identifiers(keys: IdentifierKeys, details: dict[str, Any]) -> None:
    """422 for an identifier of a rectification that is no valid email, phone, external id or device id."""
    named: list[tuple[tuple[str | int, ...], str, str]] = [
        (("body", "details", "add"), kind, value) for kind, value in (details.get("add") or {}).items()
    ]
    named += [
        (("body", "details", "remove", index), kind, value)
        for index, ref in enumerate(details.get("remove") or []) for kind, value in ref.items()
    ]
    for loc, kind, value in named:
        subjects.normalise(kind, value, region=keys.region, loc=loc)


async def _addable(
    session: AsyncSession, keys: IdentifierKeys, *, tenant: str, subject_id: uuid.UUID, added: dict[str, str] | None
) -> None:
    """409 when an identifier a rectification would add belongs to another subject (checked again on completion)."""
    for kind, value in (added or {}).items():
        held_by = await subjects.holder(session, keys, tenant=tenant, kind=kind, value=value, loc=("body", "details", "add"))
        if held_by is not None and held_by != subject_id:
            raise Conflict(f"that {kind} belongs to another subject")


def _received_note(body: RequestIn) -> str:
    return f"received by {body.received_via}" if body.received_via else "received"


def _start_clock(row: DataRequest, started: datetime, region: str) -> None:
    row.clock_started_at = started
    _redate(row, region)


def _redate(row: DataRequest, region: str) -> None:
    """The due dates from the clock's start and the days it stood still."""
    assert row.clock_started_at is not None, "a request is dated once its clock has started"
    start = deadlines.uk_day(row.clock_started_at)
    row.due_at = deadlines.due(start, paused_days=row.paused_days, region=region)
    if row.extended_due_at is not None:
        row.extended_due_at = deadlines.due(
            start, paused_days=row.paused_days, region=region, months=deadlines.EXTENDED_MONTHS
        )
    row.due_sort = row.extended_due_at or row.due_at


async def _locked(session: AsyncSession, actor: Actor, request_id: uuid.UUID) -> DataRequest:
    """The request, its row locked until the transaction ends; 404 for another tenant's; 409 once it is closed."""
    row = await row_of(session, tenant=actor.tenant, request_id=request_id, lock=True)
    if row.status not in OPEN:
        raise Conflict(f"the request is already {row.status}")
    return row


async def verify(session: AsyncSession, actor: Actor, request_id: uuid.UUID, body: VerifyIn) -> RequestOut:
    """The person's identity is checked: the clock of a request that waited for it starts today."""
    row = await _locked(session, actor, request_id)
    if row.status != "pending_verification":
        raise Conflict("the request is not waiting for the person's identity to be verified")
    now = utcnow()
    row.status, row.verified_method, row.verified_at = "in_progress", body.method, now
    _start_clock(row, now, actor.region)
    return await _acted(session, row, actor, "verified", now, _joined(f"method: {body.method}", body.note))


# How long a verification link works, and who the log says verified through one.
LINK_LIFETIME = timedelta(days=7)
PERSON = "the person (verification link)"


def _link_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def verification_link(session: AsyncSession, actor: Actor, request_id: uuid.UUID, *, page: str) -> VerificationLinkOut:
    """A link for the person to confirm the request themselves (method `email_link`), valid LINK_LIFETIME; it
    replaces any link made before. Only the token's SHA-256 is stored; the token rides in the URL's fragment, which
    a browser never sends, so it reaches no server log. 409 unless the request waits for verification."""
    row = await _locked(session, actor, request_id)
    if row.status != "pending_verification":
        raise Conflict("the request is not waiting for the person's identity to be verified")
    token, now = secrets.token_urlsafe(32), utcnow()
    row.link_hash, row.link_expires_at = _link_hash(token), now + LINK_LIFETIME
    await _append(session, row, actor, "verification_link", now, f"a link valid until {_iso(row.link_expires_at)}")
    await session.flush()
    return VerificationLinkOut(url=f"{page}#{token}", expires_at=row.link_expires_at)


async def verify_by_link(session: AsyncSession, *, token: str, region: str) -> LinkVerifiedOut:
    """The person confirms through their link: a request waiting for verification starts its clock today.
    Confirming again is fine; 404 for a link that is unknown, replaced or expired; 409 for a closed request."""
    row = (await session.execute(
        sa.select(DataRequest).where(_REQUESTS.c.link_hash == _link_hash(token)).with_for_update()
    )).scalar_one_or_none()
    now = utcnow()
    if row is None or row.link_expires_at is None or row.link_expires_at <= now:
        raise NotFound("verification link (it may have expired, or a newer one was sent)")
    if row.status == "pending_verification":
        row.status, row.verified_method, row.verified_at = "in_progress", "email_link", now
        _start_clock(row, now, region)
        await _append(session, row, Actor(row.tenant_id, PERSON, region), "verified", now, "method: email_link")
        await session.flush()
    elif row.status not in OPEN:
        raise Conflict(f"the request is already {row.status}")
    return LinkVerifiedOut(verified=True, type=row.type)


async def clarify(session: AsyncSession, actor: Actor, request_id: uuid.UUID, body: ClarifyIn) -> RequestOut:
    """Ask the person what they mean: the clock stops until they answer (resume)."""
    row = await _locked(session, actor, request_id)
    if row.status != "in_progress":
        raise Conflict(f"a request {_status_words(row.status)} cannot be paused for a clarification")
    now = utcnow()
    row.status, row.paused_on = "awaiting_clarification", deadlines.uk_day(now)
    return await _acted(session, row, actor, "clarification_requested", now, body.question)


async def resume(session: AsyncSession, actor: Actor, request_id: uuid.UUID, body: ResumeIn) -> RequestOut:
    """The person answered: the clock runs again, and the due dates move by the days it stood still."""
    row = await _locked(session, actor, request_id)
    if row.status != "awaiting_clarification" or row.paused_on is None:
        raise Conflict("the request is not waiting for a clarification")
    now = utcnow()
    paused = deadlines.paused_between(row.paused_on, deadlines.uk_day(now))
    row.status, row.paused_on, row.paused_days = "in_progress", None, row.paused_days + paused
    _redate(row, actor.region)
    return await _acted(session, row, actor, "resumed", now, _joined(f"paused {paused} days", body.note))


async def extend(session: AsyncSession, actor: Actor, request_id: uuid.UUID, body: ExtendIn) -> RequestOut:
    """Extend, once and before the due date, to three months from the clock's start, with the notice recorded."""
    row = await _locked(session, actor, request_id)
    now = utcnow()
    notified = _not_future(body.notified_at, now, ["body", "notified_at"])
    if row.due_at is None:
        raise Conflict("the request's clock has not started: verify the person's identity first")
    if row.extended_due_at is not None:
        raise Conflict("the request was extended already: it can be extended once")
    if deadlines.uk_day(now) > row.due_at:
        raise Conflict(f"the request was due on {row.due_at}: an extension must be made before that")
    if row.received_at > notified:
        raise Unprocessable("the person cannot have been told before the request was received", loc=["body", "notified_at"])
    row.extended_due_at = row.due_at  # marks it extended; _redate gives the date
    _redate(row, actor.region)
    note = f"{body.reason} (the person was told on {deadlines.uk_day(notified)})"
    return await _acted(session, row, actor, "extended", now, note)


async def refuse(session: AsyncSession, actor: Actor, request_id: uuid.UUID, body: RefuseIn) -> RequestOut:
    """Refuse the request, with the ground and what to tell the person."""
    row = await _locked(session, actor, request_id)
    now = utcnow()
    row.status, row.outcome = "refused", {"refused": body.reason, "detail": body.detail, "at": _iso(now)}
    return await _acted(session, row, actor, "refused", now, f"{body.reason}: {body.detail}")


async def complete(session: AsyncSession, keys: IdentifierKeys, actor: Actor, request_id: uuid.UUID) -> RequestOut:
    """Carry the request out, in this transaction, and record what was done and what was withheld (`outcome`)."""
    row = await _locked(session, actor, request_id)
    if row.status == "pending_verification":
        raise Conflict(f"an {row.type} request is carried out once the person's identity is verified")
    if row.status == "awaiting_clarification":
        raise Conflict("the request waits for the person's clarification: resume it first")
    carry_out = completion.COMPLETIONS.get(row.type)
    if carry_out is None:
        raise Conflict(f"completing a {row.type} request is not supported by this version of consentd")
    now = utcnow()
    before = await _flags(session, row)
    if "erased" in before:
        # Erased since the request arrived: nothing is held any more (and nothing can be changed).
        outcome: dict[str, Any] = {"done": [], "nothing_held": True, "erased": True}
    else:
        outcome = await carry_out(session, keys, actor.client, row)
    row.status, row.outcome = "completed", {"completed_at": _iso(now), **outcome}
    row.waiting_on_holds = bool(outcome.get("pending"))
    done = outcome.get("done") or []
    note = "; ".join(done) if done else ("nothing held" if outcome.get("nothing_held") else None)
    await _append(session, row, actor, "completed", now, note)
    await _log_flags(session, row, actor, before, now)
    await notifications.emit(session, tenant=actor.tenant, type="request.completed", data=_event_data(row))
    if row.type == "rectification" and row.subject_id is not None and "erased" not in before:
        await notifications.emit(session, tenant=actor.tenant, type="subject.rectified", data={
            **_event_data(row), "recipients": [r["third_party"] for r in outcome.get("recipients", [])],
        })
    return await _acted(session, row, actor, None, now, None)


def _event_data(row: DataRequest) -> dict[str, Any]:
    """What a request's webhook event says: ids and the type, never an identifier."""
    return {
        "request_id": str(row.id), "type": row.type, "status": row.status,
        "subject_id": None if row.subject_id is None else str(row.subject_id),
    }


async def _flags(session: AsyncSession, row: DataRequest) -> list[str]:
    return [] if row.subject_id is None else await subjects.flags_of(session, tenant=row.tenant_id, subject_id=row.subject_id)


async def _log_flags(session: AsyncSession, row: DataRequest, actor: Actor, before: list[str], at: datetime) -> None:
    """An entry for each flag the completion set or cleared (`restricted`, `unrestricted`, `erased`): what audit
    verification replays to check the flags checks read (audit/request_check.py)."""
    if row.subject_id is None:
        return
    after = await _flags(session, row)
    for flag in sorted(set(before) ^ set(after)):
        action = flag if flag in after else f"un{flag}"
        await _append(session, row, actor, action, at, request_check.flag_note(row.subject_id))


async def release_hold(session: AsyncSession, actor: Actor, *, subject_id: uuid.UUID, hold_id: uuid.UUID) -> HoldOut:
    """Release a legal hold; when it was the last in force, every erasure of the subject completed in part under
    holds runs the rest now, logged on its request."""
    released = await holds.release(session, tenant=actor.tenant, subject_id=subject_id, hold_id=hold_id, actor=actor.client)
    if not await holds.in_force_on(session, tenant=actor.tenant, subject_id=subject_id):
        await _finish_waiting(session, actor, subject_id, why="the last hold was released")
    return released


async def _finish_waiting(session: AsyncSession, actor: Actor, subject_id: uuid.UUID, *, why: str) -> int:
    """Run the rest of each erasure of the subject that waited on holds (none is in force now); how many."""
    waiting = list((await session.execute(
        sa.select(DataRequest).where(
            _REQUESTS.c.tenant_id == actor.tenant, _REQUESTS.c.subject_id == subject_id, _REQUESTS.c.waiting_on_holds.is_(True),
        ).order_by(_REQUESTS.c.received_at, _REQUESTS.c.id).with_for_update()
    )).scalars())
    for row in waiting:
        now = utcnow()
        before = await _flags(session, row)
        done = await completion.finish_erasure(session, row)
        outcome = dict(row.outcome or {})
        row.outcome = {**outcome, "pending": False, "finished_at": _iso(now), "done": [*outcome.get("done", []), *done]}
        row.waiting_on_holds = False
        await _append(session, row, actor, "erasure_finished", now, f"{why}; {'; '.join(done)}")
        await _log_flags(session, row, actor, before, now)
    await session.flush()
    return len(waiting)


# Who the log names for what the scheduled work does; and how far ahead request.due_soon warns.
SCHEDULER = "consentd (scheduled)"
DUE_SOON = 7


async def scheduled(session: AsyncSession, *, region: str) -> dict[str, int]:
    """The requests' scheduled work, in the caller's transaction: the rest of every erasure whose last hold has
    lapsed (by its `until`), and a request.due_soon event, once, for each open request due within DUE_SOON days."""
    lapsed = 0
    for tenant, subject_id in (await session.execute(
        sa.select(_REQUESTS.c.tenant_id, _REQUESTS.c.subject_id).where(_REQUESTS.c.waiting_on_holds.is_(True)).distinct()
    )).all():
        if not await holds.in_force_on(session, tenant=tenant, subject_id=subject_id):
            actor = Actor(tenant, SCHEDULER, region)
            lapsed += await _finish_waiting(session, actor, subject_id, why="the last hold lapsed")
    horizon = deadlines.uk_day(utcnow()) + timedelta(days=DUE_SOON)
    due = list((await session.execute(
        sa.select(DataRequest).where(
            _REQUESTS.c.status.in_(OPEN), _REQUESTS.c.due_sort <= horizon, _REQUESTS.c.due_soon_sent_at.is_(None),
        ).with_for_update()
    )).scalars())
    for row in due:
        row.due_soon_sent_at = utcnow()
        await notifications.emit(session, tenant=row.tenant_id, type="request.due_soon", data={
            **_event_data(row), "due_at": (row.extended_due_at or row.due_at or row.due_sort).isoformat(),
        })
    await session.flush()
    return {"erasures_finished": lapsed, "due_soon": len(due)}


RECEIPT = "request-receipt+jwt"
CLOSED_AT = {"completed": "completed_at", "refused": "at"}


async def receipt(session: AsyncSession, signer: Signer, *, tenant: str, request_id: uuid.UUID) -> dict[str, Any]:
    """A signed statement of what was done and when, what was withheld and on which ground; 409 while open.

    It names the head of the request's log (length and hash), so the log it sums up can be checked against it."""
    row = await row_of(session, tenant=tenant, request_id=request_id)
    if row.status in OPEN:
        raise Conflict("a receipt is given once the request is completed or refused")
    outcome = row.outcome or {}
    statement = {
        "request_id": row.id, "tenant": tenant, "type": row.type, "subject_id": row.subject_id, "status": row.status,
        "received_at": row.received_at, "clock_started_at": row.clock_started_at, "due_at": row.due_at,
        "extended_due_at": row.extended_due_at, "closed_at": outcome.get(CLOSED_AT[row.status]), "outcome": outcome,
        "log_length": row.log_length, "log_head_hash": row.log_head_hash, "iss": signer.issuer, "iat": int(time.time()),
    }
    return {**statement, "jws": signer.sign(statement, typ=RECEIPT)}


async def exportable(session: AsyncSession, *, tenant: str, request_id: uuid.UUID) -> DataRequest:
    """The request, if its export may be fetched (a completed access or portability request); 404, 409 otherwise."""
    row = await row_of(session, tenant=tenant, request_id=request_id)
    if row.type not in ("access", "portability"):
        raise Conflict(f"an {row.type} request has no export")
    if row.status != "completed":
        raise Conflict("the export is ready once the request is completed")
    return row


def _iso(moment: datetime) -> str:
    """A moment as the API writes it (UTC, Z), for the outcome's JSON."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _status_words(status: str) -> str:
    return {"pending_verification": "waiting for verification", "awaiting_clarification": "already paused"}.get(
        status, status
    )


def _joined(first: str, note: str | None) -> str:
    return f"{first}; {note}" if note else first


async def _acted(
    session: AsyncSession, row: DataRequest, actor: Actor, action: str | None, at: datetime, note: str | None
) -> RequestOut:
    """Log the action (None: logged already) and answer the request as it now stands."""
    if action is not None:
        await _append(session, row, actor, action, at, note)
    await session.flush()
    return _out(row, await _log_of(session, [row.id]))


async def _append(
    session: AsyncSession, row: DataRequest, actor: Actor, action: str, at: datetime, note: str | None
) -> dict[str, Any]:
    """An entry at the end of the request's log (the row is locked, or new); the entry."""
    index, prev_hash = row.log_length + 1, row.log_head_hash or GENESIS
    hashed = entry_hash(
        tenant=row.tenant_id, request_id=row.id, chain_index=index, prev_hash=prev_hash, at=at, action=action,
        actor=actor.client, note=note,
    )
    entry = {
        "tenant_id": row.tenant_id, "request_id": row.id, "chain_index": index, "at": at, "action": action,
        "actor": actor.client, "note": note, "prev_hash": prev_hash, "hash": hashed,
    }
    await session.execute(sa.insert(_LOG), [entry])
    row.log_length, row.log_head_hash = index, hashed
    return entry


async def get(session: AsyncSession, *, tenant: str, request_id: uuid.UUID) -> RequestOut:
    row = await row_of(session, tenant=tenant, request_id=request_id)
    return _out(row, await _log_of(session, [row.id]))


async def row_of(session: AsyncSession, *, tenant: str, request_id: uuid.UUID, lock: bool = False) -> DataRequest:
    """The request's row (`lock`: locked until the transaction ends); 404 when the tenant has no such request."""
    query = sa.select(DataRequest).where(DataRequest.tenant_id == tenant, DataRequest.id == request_id)  # type: ignore[arg-type]
    row = (await session.execute(query.with_for_update() if lock else query)).scalar_one_or_none()
    if row is None:
        raise NotFound("request", request_id)
    return row


async def page(
    session: AsyncSession,
    *,
    tenant: str,
    status: str | None = None,
    type: str | None = None,
    due_before: date | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> RequestPage:
    """Requests, the soonest due first (those whose clock has not started last), `limit` at a time."""
    r = _REQUESTS
    query = _listed(tenant, statuses=None if status is None else (status,), type=type, due_before=due_before)
    if cursor is not None:
        after_due, after_id = _unpack_cursor(cursor)
        # A row comparison, which PostgreSQL takes as the index's range (an OR of the two cases it only filters by).
        query = query.where(sa.tuple_(r.c.due_sort, r.c.id) > sa.tuple_(sa.literal(after_due, sa.Date), sa.literal(after_id, sa.Uuid)))
    rows = list((await session.execute(query.order_by(r.c.due_sort, r.c.id).limit(limit + 1))).scalars())
    shown = rows[:limit]
    logs = await _log_of(session, [row.id for row in shown])
    next_cursor = _pack_cursor(shown[-1]) if len(rows) > limit else None
    return RequestPage(requests=[_out(row, logs) for row in shown], next_cursor=next_cursor)


def _pack_cursor(row: DataRequest) -> str:
    return cursor_after(row.due_sort, row.id)


def cursor_after(due_sort: date, request_id: uuid.UUID) -> str:
    """The cursor of the page after the request due (by `due_sort`) then with this id."""
    return pack(orjson.dumps([due_sort.isoformat(), str(request_id)]))


def _unpack_cursor(cursor: str) -> tuple[date, uuid.UUID]:
    try:
        due, request_id = orjson.loads(unpack(cursor))
        return date.fromisoformat(due), uuid.UUID(request_id)
    except (ValueError, TypeError) as exc:  # binascii.Error and JSONDecodeError are ValueErrors
        raise Unprocessable("invalid cursor", loc=["query", "cursor"]) from exc


async def _log_of(session: AsyncSession, request_ids: list[uuid.UUID]) -> Any:
    """Each request's log entries, in order, by request id (a dict of lists)."""
    if not request_ids:
        return {}
    rows = await session.execute(
        sa.select(_LOG.c.request_id, _LOG.c.at, _LOG.c.action, _LOG.c.actor, _LOG.c.note)
        .where(_LOG.c.request_id.in_(request_ids))
        .order_by(_LOG.c.request_id, _LOG.c.chain_index)
    )
    logs: dict[uuid.UUID, list[dict]] = {request_id: [] for request_id in request_ids}
    for row in rows:
        logs[row.request_id].append({"at": row.at, "action": row.action, "actor": row.actor, "note": row.note})
    return logs


def _out(row: DataRequest, log: dict[uuid.UUID, list[dict]] | list[dict]) -> RequestOut:
    entries = log if isinstance(log, list) else log[row.id]
    verified = None if row.verified_method is None else {"method": row.verified_method, "at": row.verified_at}
    return RequestOut.model_validate({
        "request_id": row.id, "type": row.type, "status": row.status, "subject_id": row.subject_id,
        "received_at": row.received_at, "received_via": row.received_via, "clock_started_at": row.clock_started_at,
        "due_at": row.due_at, "extended_due_at": row.extended_due_at, "paused_days": row.paused_days,
        "verified": verified, "details": row.details, "outcome": row.outcome,
        "log": [{k: v for k, v in entry.items() if k in ("at", "action", "actor", "note")} for entry in entries],
    })


async def open_requests(session: AsyncSession, *, tenant: str, due_before: date | None = None) -> list[DataRequest]:
    """Every open request of the tenant, the soonest due first (`consentd requests list`)."""
    query = _listed(tenant, statuses=OPEN, type=None, due_before=due_before)
    return list((await session.execute(query.order_by(_REQUESTS.c.due_sort, _REQUESTS.c.id))).scalars())


def _listed(tenant: str, *, statuses: tuple[str, ...] | None, type: str | None, due_before: date | None) -> sa.Select:
    """The tenant's requests, optionally of these statuses, of one type, due before a day (unordered)."""
    r = _REQUESTS
    query = sa.select(DataRequest).where(DataRequest.tenant_id == tenant)  # type: ignore[arg-type]
    if statuses is not None:
        query = query.where(r.c.status.in_(statuses))
    if type is not None:
        query = query.where(r.c.type == type)
    if due_before is not None:
        query = query.where(r.c.due_sort < due_before)
    return query


def days_left(row: DataRequest, today: date) -> int | None:
    """Days until the request is due (negative: overdue); None while its clock has not started."""
    return None if row.due_sort == NOT_DUE else (row.due_sort - today).days
