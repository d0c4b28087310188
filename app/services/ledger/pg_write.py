"""The PostgreSQL half of `POST /v1/consents`, on the asyncpg pool: two round trips for a new subject, two for a
known one when no other writer of that subject is in between.

1. `LOOKUP` (no transaction, no lock): the tenant's config version (is this worker's rule cache current?), the
   subject the identifier names and its chain's head.
2. `WRITE`, one statement and so its own transaction: for a new subject it creates the subject, its identifier and
   its chain; for a known one it moves the chain's head only if the head is still the one read in 1. Then the
   events, the states that move and their changes in the feed. The chain's row lock is held for that statement.

When another writer moved the head in between, the write is made again under the row lock, in a transaction of
three round trips (`LOCK`, `WRITE`, commit). When another request created the same person in between, the
identifier's unique key refuses the statement, and the write starts over as one for a known subject.

Hashes, states and the feed follow exactly the rules of the SQLAlchemy half (consents.append): the same chain
fields (chains.extend), the state moving only to a newer decision by (captured_at, seq), the change's position
(changes/feed.py). tests/services/test_pg_write.py compares the rows both halves store.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

import asyncpg
import orjson

from app.db import acquire
from app.errors import Conflict, NotFound
from app.models.base import new_id, utcnow
from app.services.kit import Gates
from app.services.ledger.bulk import MOVES_ONLY_FORWARD
from app.services.ledger.chains import EMPTY, ERASED, Head, extend, head_of
from app.services.ledger.events import Decided, Event, Record, drafts
from app.services.purposes import Rule, RuleCache, grant_expiry

LOOKUP_BY_IDENTIFIER = """
SELECT t.config_version, i.subject_id, c.length, c.head_event_id, c.head_hash,
       i.erased_at IS NOT NULL OR c.erased_at IS NOT NULL AS erased
FROM tenants t
LEFT JOIN subject_identifiers i ON i.tenant_id = t.key AND i.id_hash = $2
LEFT JOIN ledger_chains c ON c.subject_id = i.subject_id
WHERE t.key = $1
"""
LOOKUP_BY_ID = """
SELECT t.config_version, s.id, c.length, c.head_event_id, c.head_hash, c.erased_at IS NOT NULL AS erased
FROM tenants t
LEFT JOIN subjects s ON s.tenant_id = t.key AND s.id = $2
LEFT JOIN ledger_chains c ON c.subject_id = s.id
WHERE t.key = $1
"""
LOCK = "SELECT length, head_event_id, head_hash, erased_at FROM ledger_chains WHERE subject_id = $1 FOR UPDATE"

# $1 tenant, $2 subject, $3 captured_at, $4 recorded_at, $5 source, $6 each event's method, $7 policy_version,
# $8 collection_point, $9 actor, $10 evidence; $11-$19 one array per event; $20-$21 the new head;
# $22-$27 one array per state to move (the newest event of each key, in key order).
_TAIL = """
e AS (
    INSERT INTO consent_events (event_id, tenant_id, subject_id, purpose, purpose_version, channel, status,
                                captured_at, recorded_at, source, method, policy_version, collection_point, actor,
                                chain_index, prev_event_id, prev_hash, hash, evidence)
    SELECT u.event_id, $1, c.subject_id, u.purpose, u.purpose_version, u.channel, u.status, $3, $4, $5, u.method,
           $7, $8, $9, u.chain_index, u.prev_event_id, u.prev_hash, u.hash, $10::json
    FROM c, unnest($11::uuid[], $12::text[], $13::int[], $14::text[], $15::text[], $16::int[], $17::uuid[],
                   $18::text[], $19::text[], $6::text[]) WITH ORDINALITY
         AS u(event_id, purpose, purpose_version, channel, status, chain_index, prev_event_id, prev_hash, hash, method,
              ord)
    ORDER BY u.ord
    RETURNING seq, event_id
), s AS (
    SELECT * FROM unnest($22::uuid[], $23::text[], $24::text[], $25::text[], $26::int[], $27::timestamptz[])
        AS s(event_id, purpose, channel, status, purpose_version, expires_at)
), moved AS (
    INSERT INTO consent_state AS cs (tenant_id, subject_id, purpose, channel, status, captured_at, recorded_at,
                                     event_seq, event_id, purpose_version, policy_version, feed_position)
    SELECT $1, $2, s.purpose, s.channel, s.status, $3, $4, e.seq, e.event_id, s.purpose_version, $7,
           pg_current_xact_id()::text::bigint
    FROM s JOIN e ON e.event_id = s.event_id
    ORDER BY s.purpose, s.channel
""" + MOVES_ONLY_FORWARD + """
    RETURNING cs.purpose, cs.channel, cs.status, cs.captured_at, cs.event_id, cs.purpose_version, cs.feed_position
), fed AS (
    INSERT INTO consent_changes (tenant_id, position, kind, subject_id, purpose, channel, status, captured_at,
                                 event_id, purpose_version, expires_at)
    SELECT $1, m.feed_position, 'consent', $2, m.purpose, m.channel, m.status, m.captured_at, m.event_id,
           m.purpose_version, s.expires_at
    FROM moved m JOIN s ON s.event_id = m.event_id
)
SELECT count(*) FROM c
"""
# A new subject: the subject, its identifier (unique per tenant: a concurrent creation of the same person fails
# here) and its chain. $28 created_at; $29-$31 the identifier. Fenced, only while the tenant's config version is
# still $32, the one the caller validated against: else nothing is written.
_NEW_SUBJECT = """
WITH subject AS (
    INSERT INTO subjects (id, tenant_id, flags, feed_position, created_at)
    SELECT $2::uuid, $1::text, '[]'::json, 0, $28::timestamptz
    {fence}
    RETURNING id
), claimed AS (
    INSERT INTO subject_identifiers (tenant_id, id_hash, subject_id, type, value_sealed, created_at)
    SELECT $1, $29, id, $30, $31, $28 FROM subject
), c AS (
    INSERT INTO ledger_chains (subject_id, tenant_id, length, head_event_id, head_hash)
    SELECT id, $1, $20::int, ($11::uuid[])[$20::int], $21::text FROM subject
    RETURNING subject_id
),"""
WRITE_NEW = _NEW_SUBJECT.format(fence="") + _TAIL
WRITE_NEW_FENCED = (
    _NEW_SUBJECT.format(fence="WHERE (SELECT config_version FROM tenants WHERE key = $1) = $32::bigint") + _TAIL
)
# A known subject: the head moves only from the one read before ($28: its length), and not once the subject is
# erased (an erasure moves the row: a write that waited for it sees it), else nothing is written.
WRITE_KNOWN = """
WITH c AS (
    UPDATE ledger_chains SET length = $20::int, head_event_id = ($11::uuid[])[$20::int - $28::int], head_hash = $21::text
    WHERE subject_id = $2::uuid AND length = $28::int AND erased_at IS NULL
    RETURNING subject_id
),""" + _TAIL


@dataclass(frozen=True, slots=True)
class Claim:
    """The identifier a record names its subject by: its blind index, kind and sealed value."""

    id_hash: str
    kind: str
    sealed: str


class HeadMoved(Exception):
    """Another writer extended the subject's chain between the lookup and the write."""


class Erased(Exception):
    """The identifier or subject named was erased: the SQLAlchemy half refuses the decision or starts a new subject."""


class ConfigMoved(Exception):
    """The tenant's config version is no longer the one a fenced write was validated against."""


async def lookup(
    connection: asyncpg.Connection, *, tenant: str, claim: Claim | None, subject_id: uuid.UUID | None
) -> tuple[int, uuid.UUID | None, Head | None]:
    """The config version, the subject (None: nobody holds the identifier) and its chain's head (None: no chain).
    Erased when the identifier or the subject was erased."""
    if claim is not None:
        row = await connection.fetchrow(LOOKUP_BY_IDENTIFIER, tenant, claim.id_hash)
    else:
        row = await connection.fetchrow(LOOKUP_BY_ID, tenant, subject_id)
    version, found, length, head_event_id, head_hash, erased = row
    if erased:
        raise Erased
    if found is None and claim is None:
        raise NotFound("subject", subject_id)
    head = None if length is None else (length, head_event_id, head_hash)
    return version, found, head


def _events(record: Record, rules: dict[str, Rule], subject_id: uuid.UUID, head: Head) -> list[Event]:
    """The record's events, chained after `head` and stamped now."""
    recorded_at = utcnow()
    events = []
    for draft in drafts(record, subject_id=subject_id, rules=rules):
        event = extend(head, draft, recorded_at=recorded_at)
        head = head_of(event)
        events.append(event)
    return events


_CHAINED = ("event_id", "purpose", "purpose_version", "channel", "status", "chain_index", "prev_event_id", "prev_hash",
            "hash")


def _arguments(record: Record, rules: dict[str, Rule], events: list[Event]) -> list:
    """The parameters $1-$27 of WRITE_NEW and WRITE_KNOWN."""
    first, last = events[0], events[-1]
    # One decision per key stands: the last of the record's (they share captured_at, and seq follows their order).
    newest = sorted({(e.purpose, e.channel): e for e in events}.values(), key=lambda e: (e.purpose, e.channel))
    return [
        record.tenant, first.subject_id, first.captured_at, first.recorded_at, record.source,
        [e.method for e in events],
        record.policy_version, record.collection_point, record.actor,
        None if record.evidence is None else orjson.dumps(record.evidence).decode(),
        *([getattr(e, name) for e in events] for name in _CHAINED),
        last.chain_index, last.hash,
        [e.event_id for e in newest], [e.purpose for e in newest], [e.channel for e in newest],
        [e.status for e in newest], [e.purpose_version for e in newest],
        [grant_expiry(rules[e.purpose], e.status, e.captured_at) for e in newest],
    ]


async def write(
    connection: asyncpg.Connection,
    rules: dict[str, Rule],
    record: Record,
    *,
    subject_id: uuid.UUID | None,
    head: Head | None,
    claim: Claim | None,
    fence: int | None = None,
) -> tuple[uuid.UUID, list[Event]]:
    """Store the record for the subject found by `lookup` (None: create it with `claim`); the subject and its events.

    Raises HeadMoved when a writer of the same subject came in between, and asyncpg.UniqueViolationError when a
    concurrent request created the same person first: the caller starts over (`record`). `fence` (a new subject
    only): the config version `rules` are of, read without a lookup; ConfigMoved when it is no longer current.
    """
    if subject_id is None:
        assert claim is not None
        subject_id = new_id()
        events = _events(record, rules, subject_id, EMPTY)
        arguments = [*_arguments(record, rules, events), events[0].recorded_at, claim.id_hash, claim.kind, claim.sealed]
        if fence is None:
            await connection.fetchval(WRITE_NEW, *arguments)
        elif not await connection.fetchval(WRITE_NEW_FENCED, *arguments, fence):
            raise ConfigMoved
        return subject_id, events
    assert head is not None
    events = _events(record, rules, subject_id, head)
    linked = await connection.fetchval(WRITE_KNOWN, *_arguments(record, rules, events), head[0])
    if not linked:
        raise HeadMoved
    return subject_id, events


async def write_locked(
    connection: asyncpg.Connection, rules: dict[str, Rule], record: Record, *, subject_id: uuid.UUID
) -> list[Event]:
    """The write for a known subject under its chain's row lock (after HeadMoved): it cannot move again."""
    async with connection.transaction():
        length, head_event_id, head_hash, erased_at = await connection.fetchrow(LOCK, subject_id)
        if erased_at is not None:
            raise Conflict(ERASED)
        head = (length, head_event_id, head_hash)
        # Stamped after the wait for the lock: along a chain, recorded_at never runs backwards.
        events = _events(record, rules, subject_id, head)
        await connection.fetchval(WRITE_KNOWN, *_arguments(record, rules, events), length)
    return events


# The subject's writers in this worker, by the identifier or id they name it by.
WRITERS = Gates()


class NoChain(Exception):
    """The subject exists but has never had an event: the SQLAlchemy half opens its chain."""

    def __init__(self, subject_id: uuid.UUID) -> None:
        super().__init__(str(subject_id))
        self.subject_id = subject_id


async def record_events(
    pool: asyncpg.Pool,
    cache: RuleCache,
    record: Record,
    *,
    validate: Callable[[dict[str, Rule]], tuple[Decided, ...]],
    claim: Claim | None,
    subject_id: uuid.UUID | None,
) -> tuple[uuid.UUID, list[Event]]:
    """Look up, validate against the current rules, write; start over once if another request created the person.

    Writers of one subject in this process take turns (`WRITERS`) before they take a connection.
    """
    gate = (record.tenant, claim.id_hash) if claim is not None else (record.tenant, subject_id)
    async with WRITERS.through(gate), acquire(pool) as connection:
        for attempt in range(2):
            version, found, head = await lookup(connection, tenant=record.tenant, claim=claim, subject_id=subject_id)
            rules = await cache.current(connection, tenant=record.tenant, version=version)
            decided = validate(rules)
            bound = replace(record, decisions=decided)
            if found is not None and head is None:
                # A subject with no chain yet (created by a link, say): its first events open one under the lock.
                raise NoChain(found)
            try:
                return await write(connection, rules, bound, subject_id=found, head=head, claim=claim)
            except HeadMoved:
                assert found is not None
                return found, await write_locked(connection, rules, bound, subject_id=found)
            except asyncpg.UniqueViolationError:
                if attempt:
                    raise
    raise AssertionError("unreachable")
