"""Recording consent decisions: append events, move the state projection, honour Idempotency-Key."""

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy import and_, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db import Database
from app.errors import Conflict, Unprocessable
from app.models import ConsentEvent, ConsentState, IdempotencyRecord
from app.models.base import table_of, utcnow
from app.models.consents import ConsentEventOut, ConsentRecordIn, ConsentRecordOut
from app.services import changes, purposes, subjects
from app.services.kit import is_postgres, upsert
from app.services.ledger import bulk as pg_bulk
from app.services.ledger import chains, pg_write
from app.services.ledger.events import Decided, Draft, Event, Record, drafts
from app.services.purposes import Rule, RuleCache, api_channel, check_status, grant_expiry, storage_channel
from app.services.subjects import IdentifierKeys, InvalidIdentifier

MAX_CLOCK_SKEW = timedelta(minutes=5)
STATE_KEY = ["tenant_id", "subject_id", "purpose", "channel"]


@dataclass(frozen=True)
class Outcome:
    status_code: int
    body: dict
    replayed: bool = False


def moment_of_capture(captured_at: datetime | None, *, now: datetime, loc: list[str | int]) -> datetime | None:
    """The captured_at to store; None for "the moment the ledger records it" (chains.link stamps it).

    A client's clock may run up to MAX_CLOCK_SKEW ahead: such a moment is taken as the recording moment, so that no
    decision can outrank one recorded after it (a grant dated five minutes ahead would otherwise beat every
    withdrawal made in those five minutes, for good). Further ahead is a 422.
    """
    if captured_at is None:
        return None
    if captured_at > now + MAX_CLOCK_SKEW:
        raise Unprocessable("captured_at may not be more than 5 minutes in the future", loc=loc)
    return None if captured_at > now else captured_at


def request_hash(body: BaseModel, *, extra: dict | None = None) -> str:
    """A digest of the request's meaning (not its bytes): key order and spacing do not matter.

    `extra`: what else the answer depends on (a header, say).
    """
    meaning = {"body": body.model_dump(mode="json"), **(extra or {})} if extra else body.model_dump(mode="json")
    return hashlib.sha256(orjson.dumps(meaning, option=orjson.OPT_SORT_KEYS)).hexdigest()


def event_out(event: Event | Mapping[str, Any]) -> ConsentEventOut:
    """An event (or a row of consent_events) as the API shows it."""
    fields = event.row() if isinstance(event, Event) else event
    return ConsentEventOut.model_validate({**fields, "channel": api_channel(fields["channel"])})


async def claim_idempotency_key(session: AsyncSession, *, tenant: str, key: str, digest: str) -> Outcome | None:
    """Claim the key for this request; the stored answer when a completed request holds it; 409 on another body."""
    # A concurrent request with the same key waits here until the first one commits or rolls back.
    await session.execute(
        upsert(session, table_of(IdempotencyRecord))
        .values(tenant_id=tenant, key=key, request_hash=digest, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["tenant_id", "key"])
    )
    held = (
        await session.execute(
            select(IdempotencyRecord).where(col(IdempotencyRecord.tenant_id) == tenant, col(IdempotencyRecord.key) == key)
        )
    ).scalar_one()
    if held.request_hash != digest:
        raise Conflict("this Idempotency-Key was used with another request body")
    if held.status_code is None or held.response is None:
        return None  # not answered yet: this request answers it
    return Outcome(held.status_code, held.response, replayed=True)


async def store_idempotent_answer(session: AsyncSession, *, tenant: str, key: str, outcome: Outcome) -> None:
    record = (
        await session.execute(
            select(IdempotencyRecord).where(col(IdempotencyRecord.tenant_id) == tenant, col(IdempotencyRecord.key) == key)
        )
    ).scalar_one()
    record.status_code, record.response = outcome.status_code, outcome.body
    session.add(record)
    await session.flush()


async def record(
    database: Database,
    keys: IdentifierKeys,
    rule_cache: RuleCache,
    *,
    tenant: str,
    actor: str,
    body: ConsentRecordIn,
    idempotency_key: str | None = None,
) -> Outcome:
    """Store every decision of `body` or none; the answer is replayed for a retry with the same key.

    On PostgreSQL, a record naming its subject by one identifier or by id goes through the asyncpg half
    (ledger/pg_write.py); an Idempotency-Key, extra identifiers, a device and SQLite take the session's.
    """
    fast = _fast_claim(keys, tenant=tenant, body=body) if database.pool is not None and idempotency_key is None else None
    if fast is not None:
        captured_at = moment_of_capture(body.captured_at, now=utcnow(), loc=["body", "captured_at"])
        shared = Record(
            tenant=tenant, decisions=(), captured_at=captured_at, source=body.source, method="api",
            policy_version=body.policy_version, collection_point=body.collection_point, actor=actor,
            evidence=body.evidence,
        )
        try:
            subject_id, events = await pg_write.record_events(
                database.pool, rule_cache, shared, validate=lambda rules: validated(body, rules), claim=fast[0],
                subject_id=body.subject.subject_id,
            )
        except (pg_write.NoChain, pg_write.Erased):
            pass  # its first event opens the chain, or the person was erased: the session's half does that
        else:
            return _created(subject_id, events)
    async with database.transaction() as session:
        return await record_in(session, keys, tenant=tenant, actor=actor, body=body, idempotency_key=idempotency_key)


def _fast_claim(keys: IdentifierKeys, *, tenant: str, body: ConsentRecordIn) -> tuple[pg_write.Claim | None] | None:
    """The identifier the asyncpg half looks the subject up by ((None,) for a subject_id); None: not its shape."""
    if body.identifiers is not None and body.identifiers.items():
        return None
    if body.subject.subject_id is not None:
        return (None,)
    kind, _ = body.subject.kind_and_value()
    if kind == subjects.DEVICE:
        return None  # devices move between subjects (devices.link): writes for one hold it, in the session's half
    try:
        named = subjects.naming(keys, tenant=tenant, ref=body.subject, identifiers=None, loc=("body",))
    except InvalidIdentifier:
        return None  # the session's half reports it, after the purposes, as it always has
    own = named.own
    assert own is not None and own.sealed is not None
    return (pg_write.Claim(id_hash=own.id_hash, kind=own.kind, sealed=own.sealed),)


def validated(body: ConsentRecordIn, rules: Mapping[str, Rule]) -> tuple[Decided, ...]:
    """The body's decisions with their stored channels; 422 for an unknown purpose, a wrong channel or a withdrawal
    of what rests on contract or law."""
    decided = []
    for index, decision in enumerate(body.decisions):
        rule = rules.get(decision.purpose)
        if rule is None:
            raise Unprocessable(f"unknown purpose '{decision.purpose}'", loc=["body", "decisions", index, "purpose"])
        channel = storage_channel(rule, decision.channel, loc=["body", "decisions", index, "channel"])
        check_status(rule, decision.status, loc=["body", "decisions", index, "status"])
        decided.append(Decided(decision.purpose, channel, decision.status))
    return tuple(decided)


def _created(subject_id: uuid.UUID, events: Sequence[Event]) -> Outcome:
    return Outcome(
        201, ConsentRecordOut(subject_id=subject_id, events=[event_out(e) for e in events]).model_dump(mode="json")
    )


async def record_in(
    session: AsyncSession,
    keys: IdentifierKeys,
    *,
    tenant: str,
    actor: str,
    body: ConsentRecordIn,
    idempotency_key: str | None = None,
) -> Outcome:
    """The session's half of `record`, in the caller's transaction (SQLite, and the shapes pg_write leaves)."""
    if idempotency_key is not None:
        replay = await claim_idempotency_key(session, tenant=tenant, key=idempotency_key, digest=request_hash(body))
        if replay is not None:
            return replay
    captured_at = moment_of_capture(body.captured_at, now=utcnow(), loc=["body", "captured_at"])
    rules = await purposes.rules(session, tenant=tenant, keys={d.purpose for d in body.decisions})
    record = Record(
        tenant=tenant, decisions=validated(body, rules), captured_at=captured_at, source=body.source, method="api",
        policy_version=body.policy_version, collection_point=body.collection_point, actor=actor, evidence=body.evidence,
    )
    subject_id = await subjects.resolve(
        session, keys, tenant=tenant, ref=body.subject, identifiers=body.identifiers, captured_at=captured_at
    )
    events = await append(session, drafts(record, subject_id=subject_id, rules=rules), rules)
    outcome = _created(subject_id, events)
    if idempotency_key is not None:
        await store_idempotent_answer(session, tenant=tenant, key=idempotency_key, outcome=outcome)
    return outcome


async def append(session: AsyncSession, drafts: Sequence[Draft], rules: Mapping[str, Rule]) -> list[Event]:
    """Append the drafts to the ledger as events and move the state projection, in the caller's transaction.

    Each draft joins its subject's hash chain (which orders writers of one subject), then gets its ledger `seq`.
    The state of a (subject, purpose, channel) moves only to a decision
    that is newer by (captured_at, seq): a late-arriving older decision enters the history and nothing else.
    Every state that moved is a change in the feed, with the grant's expiry under `rules` (the events' purposes).
    """
    events = await chains.link(session, drafts)
    grants_expire = expiries(events, rules)
    # The rows of the statements below, each given its `seq` on the way.
    rows = [event.row() for event in events]
    if is_postgres(session):
        await _append_pg(session, rows, grants_expire)
        return events
    table = table_of(ConsentEvent)
    seqs = await session.execute(insert(table).returning(table.c.seq, sort_by_parameter_order=True), rows)
    for row, seq in zip(rows, seqs.scalars(), strict=True):
        row["seq"] = seq
    ordered = newest_by_state(rows)
    state = table_of(ConsentState)
    rows = [
        {
            "tenant_id": e["tenant_id"],
            "subject_id": e["subject_id"],
            "purpose": e["purpose"],
            "channel": e["channel"],
            "status": e["status"],
            "captured_at": e["captured_at"],
            "recorded_at": e["recorded_at"],
            "event_seq": e["seq"],
            "event_id": e["event_id"],
            "purpose_version": e["purpose_version"],
            "policy_version": e["policy_version"],
            # SQLite's writers queue, so its feed needs no positions (changes.py).
            "feed_position": 0,
        }
        for e in ordered
    ]
    # Executed as one executemany: SQLAlchemy sends it as multi-row statements sized for the driver's limits.
    statement = upsert(session, state)
    incoming = statement.excluded
    moved = await session.execute(
        statement.on_conflict_do_update(
            index_elements=STATE_KEY,
            set_={column: incoming[column] for column in state.columns.keys() if column not in STATE_KEY},  # noqa: SIM118 - a ColumnCollection
            where=or_(
                incoming.captured_at > state.c.captured_at,
                and_(incoming.captured_at == state.c.captured_at, incoming.event_seq > state.c.event_seq),
            ),
        ).returning(*(state.c[column] for column in changes.STATE_COLUMNS)),
        rows,
    )
    # Only the states that moved come back: a late-arriving older decision is history, not a change.
    await changes.append(session, [dict(row) for row in moved.mappings()], grants_expire)
    return events


def expiries(events: Iterable[Event], rules: Mapping[str, Rule]) -> dict[uuid.UUID, datetime]:
    """When each grant among `events` expires (by event id), under its purpose's rule; the rest never do."""
    return {
        e.event_id: expiry
        for e in events
        if (expiry := grant_expiry(rules[e.purpose], e.status, e.captured_at)) is not None
    }


async def _append_pg(session: AsyncSession, rows: list[dict], grants_expire: dict) -> None:
    """The same on PostgreSQL, in three statements with array parameters (see pg_bulk)."""
    await pg_bulk.take_seqs(session, rows)
    await pg_bulk.insert_events(session, rows)
    await pg_bulk.move_states(session, newest_by_state(rows), grants_expire)


def newest_by_state(events: list[dict]) -> list[dict]:
    """The newest event (a row, with its seq) of each state key, in key order: concurrent requests touching the
    same states lock them in one order and cannot deadlock."""
    newest: dict[tuple, dict] = {}
    for event in events:
        key = (event["subject_id"], event["purpose"], event["channel"])
        if key not in newest or _order(event) > _order(newest[key]):
            newest[key] = event
    return sorted(newest.values(), key=lambda e: (str(e["subject_id"]), e["purpose"], e["channel"]))


def _order(event: dict) -> tuple[datetime, int]:
    return event["captured_at"], event["seq"]
