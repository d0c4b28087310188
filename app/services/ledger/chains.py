"""Hash chains over the ledger: one chain per subject, so writers of different subjects never wait for each other.

Each event's `hash` is the SHA-256 of its canonical bytes (below), which include its position in the subject's
chain (`chain_index`), the event before it (`prev_event_id`) and that event's hash (`prev_hash`). Changing,
deleting, inserting or reordering an event therefore breaks the chain at a place verification can name
(services/audit/verification.py). `ledger_chains` holds each chain's head; its row is the lock that orders writers
of one subject. The canonical form is public (docs/audit.md), so anyone holding an export can check it.

The hash commits to an event's evidence by the evidence's own SHA-256 (`evidence_sha256`), not by its bytes: when a
person is erased, their events' evidence is destroyed and its digest kept (`evidence_erased_at`), and the chain
still verifies without the erased bytes (format v2; migration 20261204_0009 re-hashed the v1 chains).
"""

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict
from app.models import LedgerChain
from app.models.base import table_of, utcnow
from app.services.kit import in_slices, is_postgres, raw_connection, upsert
from app.services.ledger.events import EVENT_FIELDS, Draft, Event

FORMAT = "consentd-event-v2"
GENESIS = "0" * 64
# The fields an event's hash covers, in canonical order (after FORMAT).
CANONICAL_FIELDS = (
    "tenant_id", "subject_id", "chain_index", "prev_event_id", "prev_hash", "event_id", "purpose", "purpose_version",
    "channel", "status", "captured_at", "recorded_at", "source", "method", "policy_version", "collection_point",
    "actor", "evidence_sha256",
)


def timestamp(value: datetime | str) -> str:
    """A timestamp as the hash covers it (and the export writes it): UTC, microseconds, Z.

    Written by orjson, which leaves out a fraction of zero: half the cost of isoformat, the same text
    (tests/services/test_chains.py holds the two side by side).
    """
    if isinstance(value, str):
        return value
    if value.utcoffset():
        value = value.astimezone(UTC)
    text = orjson.dumps(value, option=orjson.OPT_UTC_Z).decode()
    return f"{text[1:-2]}Z" if value.microsecond else f"{text[1:-2]}.000000Z"


def _text(value: uuid.UUID) -> uuid.UUID | str:
    """An id for orjson, which writes a uuid.UUID as str() does, at a fifth of the cost (asyncpg's own UUID
    type, which orjson does not take, and text from SQLite go through str)."""
    return value if type(value) is uuid.UUID else str(value)


def evidence_digest(evidence: Any) -> str | None:
    """The SHA-256 an event's hash commits to its evidence by: of the evidence's JSON, keys sorted, no whitespace
    (evidence as text is hashed by meaning, whatever key order or spacing the database gives back); None for none."""
    if isinstance(evidence, str):
        evidence = orjson.loads(evidence)
    if evidence is None:
        return None
    return hashlib.sha256(orjson.dumps(evidence, option=orjson.OPT_SORT_KEYS)).hexdigest()


def canonical_values(event: Mapping[str, Any]) -> list[Any]:
    """The CANONICAL_FIELDS of an event, in that order and in canonical form (one pass, no per-field dispatch:
    verification hashes a million of these). An erased event's evidence is gone: its kept digest stands for it
    (evidence present is always hashed itself, so evidence put back altered fails)."""
    prev_event_id, evidence = event["prev_event_id"], event["evidence"]
    erased = evidence is None and event.get("evidence_erased_at") is not None
    digest = event["evidence_sha256"] if erased else evidence_digest(evidence)
    return [
        event["tenant_id"], _text(event["subject_id"]), event["chain_index"],
        None if prev_event_id is None else _text(prev_event_id), event["prev_hash"], _text(event["event_id"]),
        event["purpose"], event["purpose_version"],
        # A purpose without channels stores "" (models/consents.py); the API and the export say null.
        event["channel"] or None,
        event["status"], timestamp(event["captured_at"]), timestamp(event["recorded_at"]), event["source"],
        event["method"], event["policy_version"], event["collection_point"], event["actor"], digest,
    ]


def canonical_bytes(event: Mapping[str, Any]) -> bytes:
    """The bytes an event's hash covers: a JSON array of FORMAT and CANONICAL_FIELDS (no object left in it)."""
    return orjson.dumps([FORMAT, *canonical_values(event)])


def event_hash(event: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes(event)).hexdigest()


# A chain's head: its length, last event id and last hash.
Head = tuple[int, uuid.UUID | None, str | None]
EMPTY: Head = (0, None, None)


# One round trip: creates the heads not there yet and locks every head (a no-op update takes the row lock), in
# the order of $1 (sorted), returning each head as it stands.
PG_LOCK = (
    "INSERT INTO ledger_chains AS c (subject_id, tenant_id, length) SELECT s, $2, 0 FROM unnest($1::uuid[]) s ORDER BY s "
    "ON CONFLICT (subject_id) DO UPDATE SET length = c.length "
    "RETURNING c.subject_id, c.length, c.head_event_id, c.head_hash, c.erased_at"
)
ERASED = (
    "the person was erased (a data-subject request) while this was written: nothing was stored; a decision they "
    "give after the erasure is recorded for a new subject"
)
PG_MOVE = (
    "UPDATE ledger_chains c SET length = u.length, head_event_id = u.head_event_id, head_hash = u.head_hash "
    "FROM unnest($1::uuid[], $2::int[], $3::uuid[], $4::text[]) AS u(subject_id, length, head_event_id, head_hash) "
    "WHERE c.subject_id = u.subject_id"
)


async def link(session: AsyncSession, drafts: Sequence[Draft]) -> list[Event]:
    """Put each draft at the end of its subject's chain (in list order), in the caller's transaction; the events.

    Locks the chains' heads in subject order until commit, so call it before the events take their `seq`:
    a later writer of the same subject then gets later seqs, and ledger order agrees with chain order.
    """
    subject_ids = sorted({draft.subject_id for draft in drafts}, key=str)
    tenant = drafts[0].tenant_id
    if is_postgres(session):
        db = await raw_connection(session)
        heads = await lock_pg(db, tenant, subject_ids)
    else:
        heads = await _lock_sqlite(session, tenant, subject_ids)
    # Stamped after the wait for the lock: along a chain, recorded_at never runs backwards.
    events = chained(drafts, heads, recorded_at=utcnow())
    moved = [(subject_id, *heads[subject_id]) for subject_id in subject_ids]
    if is_postgres(session):
        await db.execute(PG_MOVE, *(list(column) for column in zip(*moved, strict=True)))
    else:
        table = table_of(LedgerChain)
        await session.execute(
            sa.update(table).where(table.c.subject_id == sa.bindparam("sid")),
            [{"sid": s, "length": n, "head_event_id": e, "head_hash": h} for s, n, e, h in moved],
        )
    return events


async def lock_pg(db: asyncpg.Connection, tenant: str, subject_ids: list[uuid.UUID]) -> dict[uuid.UUID, Head]:
    """PostgreSQL: create the heads not there yet and lock every one (PG_LOCK), in the order of `subject_ids`
    (sorted), until the transaction ends; each head as it stands. Conflict when one of the subjects was erased:
    an erasure moves the head's row, so a writer that waited for it sees it."""
    rows = await db.fetch(PG_LOCK, subject_ids, tenant)
    if any(row["erased_at"] is not None for row in rows):
        raise Conflict(ERASED)
    return {row["subject_id"]: (row["length"], row["head_event_id"], row["head_hash"]) for row in rows}


async def _lock_sqlite(session: AsyncSession, tenant: str, subject_ids: list[uuid.UUID]) -> dict[uuid.UUID, Head]:
    """SQLite: writers already queue for the database's one write lock, so reading the heads is enough."""
    table = table_of(LedgerChain)
    await session.execute(
        upsert(session, table).on_conflict_do_nothing(index_elements=["subject_id"]),
        [{"subject_id": s, "tenant_id": tenant, "length": 0} for s in subject_ids],
    )
    heads: dict[uuid.UUID, Head] = {}
    for part in in_slices(subject_ids):
        rows = await session.execute(
            sa.select(table.c.subject_id, table.c.length, table.c.head_event_id, table.c.head_hash, table.c.erased_at)
            .where(table.c.subject_id.in_(part))
        )
        for subject_id, length, head_event_id, head_hash, erased_at in rows:
            if erased_at is not None:
                raise Conflict(ERASED)
            heads[subject_id] = (length, head_event_id, head_hash)
    return heads


def extend(head: Head, draft: Draft, *, recorded_at: datetime) -> Event:
    """`draft` as the event after `head` (length, last event id, last hash), recorded at `recorded_at`: the one
    place where an event is stamped. Without a moment of its own, it was captured when recorded ("now" is the
    recording moment, so decisions stamped by the server follow the chain's lock order)."""
    length, head_event_id, head_hash = head
    stamped = (*draft[:-1], draft.captured_at or recorded_at, recorded_at, length + 1, head_event_id, head_hash or GENESIS)
    return Event._make((*stamped, event_hash(dict(zip(EVENT_FIELDS[:-1], stamped, strict=True)))))


def chained(drafts: Iterable[Draft], heads: dict[uuid.UUID, Head], *, recorded_at: datetime) -> list[Event]:
    """Each draft placed after its subject's head in `heads` (in order), recorded at `recorded_at`; `heads` is
    left holding the new heads."""
    events = []
    for draft in drafts:
        event = extend(heads[draft.subject_id], draft, recorded_at=recorded_at)
        heads[draft.subject_id] = head_of(event)
        events.append(event)
    return events


def head_of(event: Event) -> Head:
    """The chain's head once `event` is its last."""
    return event.chain_index, event.event_id, event.hash


def chain_events(events: Iterable[Mapping[str, Any]]) -> list[dict]:
    """Events (rows) of one subject chained from scratch, in ledger order: what someone rewriting a chain would do
    (tests and benchmarks use it)."""
    head, out = EMPTY, []
    for row in sorted(events, key=lambda e: e["seq"]):
        length, head_event_id, head_hash = head
        event = {**row, "chain_index": length + 1, "prev_event_id": head_event_id, "prev_hash": head_hash or GENESIS}
        event["hash"] = event_hash(event)
        head = (length + 1, event["event_id"], event["hash"])
        out.append(event)
    return out
