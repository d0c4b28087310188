"""Bulk writes on PostgreSQL through the session's own asyncpg connection, with arrays and unnest.

SQLAlchemy's executemany costs about 20 us a row in Python; an array parameter is encoded by asyncpg in C.
Imports write a million records, so on PostgreSQL the ledger's writes go this way; SQLite keeps the Core path.
These run in the caller's transaction, on the connection the session already holds.
"""

from operator import itemgetter

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from app.services.kit import columns, raw_connection, through_temp_table

_EVENT_COLUMNS = (
    ("seq", "bigint"), ("event_id", "uuid"), ("tenant_id", "text"), ("subject_id", "uuid"), ("purpose", "text"),
    ("purpose_version", "int"), ("channel", "text"), ("status", "text"), ("captured_at", "timestamptz"),
    ("recorded_at", "timestamptz"), ("source", "text"), ("method", "text"), ("policy_version", "text"),
    ("collection_point", "text"), ("actor", "text"), ("chain_index", "int"), ("prev_event_id", "uuid"),
    ("prev_hash", "text"), ("hash", "text"), ("evidence", "json"),
)
_STATE_COLUMNS = (
    ("tenant_id", "text"), ("subject_id", "uuid"), ("purpose", "text"), ("channel", "text"), ("status", "text"),
    ("captured_at", "timestamptz"), ("recorded_at", "timestamptz"), ("seq", "bigint"), ("event_id", "uuid"),
    ("purpose_version", "int"), ("policy_version", "text"),
)


_STATE_NAMES = ", ".join(name for name, _ in _STATE_COLUMNS)


def _unnest(columns: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(columns, start=1))


INSERT_EVENTS = (
    f"INSERT INTO consent_events ({', '.join(name for name, _ in _EVENT_COLUMNS)}) "
    f"SELECT * FROM unnest({_unnest(_EVENT_COLUMNS)})"
)
# An upsert into consent_state AS cs that moves a state only to a newer decision by (captured_at, seq), keeping the
# later feed position (changes/feed.py): the rule every write of the ledger follows (here and in pg_write).
MOVES_ONLY_FORWARD = """    ON CONFLICT (tenant_id, subject_id, purpose, channel) DO UPDATE SET
        status = excluded.status, captured_at = excluded.captured_at, recorded_at = excluded.recorded_at,
        event_seq = excluded.event_seq, event_id = excluded.event_id, purpose_version = excluded.purpose_version,
        policy_version = excluded.policy_version, feed_position = greatest(excluded.feed_position, cs.feed_position)
    WHERE excluded.captured_at > cs.captured_at
       OR (excluded.captured_at = cs.captured_at AND excluded.event_seq > cs.event_seq)"""
# The state moves only to a newer decision by (captured_at, seq); each state that moved becomes a change in the
# feed, positioned at this transaction's id or the replaced change's position, whichever is later (changes.py),
# with the grant's expiry (the last array, which the state itself does not keep).
_MOVE_STATES_FROM = f"""
WITH u AS ({{source}}), moved AS (
    INSERT INTO consent_state AS cs (tenant_id, subject_id, purpose, channel, status, captured_at, recorded_at,
                                     event_seq, event_id, purpose_version, policy_version, feed_position)
    SELECT {_STATE_NAMES}, pg_current_xact_id()::text::bigint FROM u
{MOVES_ONLY_FORWARD}
    RETURNING cs.tenant_id, cs.subject_id, cs.purpose, cs.channel, cs.status, cs.captured_at, cs.event_id,
              cs.purpose_version, cs.feed_position
)
INSERT INTO consent_changes (tenant_id, position, kind, subject_id, purpose, channel, status, captured_at, event_id,
                             purpose_version, expires_at)
SELECT m.tenant_id, m.feed_position, 'consent', m.subject_id, m.purpose, m.channel, m.status, m.captured_at,
       m.event_id, m.purpose_version, u.expires_at
FROM moved m JOIN u ON u.event_id = m.event_id
"""
MOVE_STATES = _MOVE_STATES_FROM.format(source=(
    f"SELECT * FROM unnest({_unnest(_STATE_COLUMNS)}, ${len(_STATE_COLUMNS) + 1}::timestamptz[]) "
    f"AS u({', '.join(name for name, _ in _STATE_COLUMNS)}, expires_at)"
))
# The sequence is looked up once (in the target list pg_get_serial_sequence ran once a row, a third of the cost),
# and the seqs come back as one array.
NEXT_SEQS = (
    "WITH s AS MATERIALIZED (SELECT pg_get_serial_sequence('consent_events', 'seq')::regclass AS seq) "
    "SELECT array(SELECT nextval(s.seq) FROM s, generate_series(1, $1))"
)


async def take_seqs(session: AsyncSession, events: list[dict]) -> None:
    """Give each event its ledger `seq`, ascending in list order."""
    db = await raw_connection(session)
    seqs = sorted(await db.fetchval(NEXT_SEQS, len(events)))
    for event, seq in zip(events, seqs, strict=True):
        event["seq"] = seq


async def insert_events(session: AsyncSession, events: list[dict]) -> None:
    """Insert events that have their `seq`."""
    db = await raw_connection(session)
    evidence = [None if e["evidence"] is None else orjson.dumps(e["evidence"]).decode() for e in events]
    await db.execute(INSERT_EVENTS, *columns(events, [name for name, _ in _EVENT_COLUMNS[:-1]]), evidence)


async def move_states(session: AsyncSession, newest: list[dict], expiries: dict) -> None:
    """Move each state to its newest event in `newest` (one per state key, in key order) if that is newer;
    `expiries`: each grant's expiry by event id, for the feed."""
    db = await raw_connection(session)
    expires = [expiries.get(event["event_id"]) for event in newest]
    await db.execute(MOVE_STATES, *columns(newest, [name for name, _ in _STATE_COLUMNS]), expires)


async def claim_digests(session: AsyncSession, *, tenant: str, digests: list[str], at) -> set[str]:
    """Insert the digests (in the given order); the ones that were not there before."""
    db = await raw_connection(session)
    rows = await db.fetch(
        "INSERT INTO consent_imports (tenant_id, record_hash, imported_at) SELECT $1, h, $3 FROM unnest($2::text[]) h "
        "ON CONFLICT (tenant_id, record_hash) DO NOTHING RETURNING record_hash",
        tenant, digests, at,
    )
    return {row[0] for row in rows}


# Imports: the same writes, their rows sent with COPY (asyncpg checks every element of an array parameter in Python,
# about 1 us each; COPY encodes rows as they are). The states go through a temporary table, as COPY has no ON CONFLICT.
_STATES = "import_states"
CREATE_STATES = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STATES} (ord int, "
    f"{', '.join(f'{name} {kind}' for name, kind in _STATE_COLUMNS)}, expires_at timestamptz) ON COMMIT DELETE ROWS"
)
MOVE_COPIED_STATES = _MOVE_STATES_FROM.format(source=f"SELECT {_STATE_NAMES}, expires_at FROM {_STATES} ORDER BY ord")
# Chains a subject has already: the new heads, each found by the primary key. A join on the array is planned as a
# hash join over the whole table (PG_MOVE did that, once per chunk: quadratic over an import), and even
# `subject_id = ANY($1)` becomes a sequential scan for a few thousand ids; one statement a row cannot.
MOVE_HEAD = "UPDATE ledger_chains SET length = $2, head_event_id = $3, head_hash = $4 WHERE subject_id = $1"
_CHAIN_COLUMNS = ("subject_id", "tenant_id", "length", "head_event_id", "head_hash")


async def copy_events(session: AsyncSession, events: list[dict]) -> None:
    """Insert events that have their `seq` (as insert_events)."""
    db = await raw_connection(session)
    values = itemgetter(*(name for name, _ in _EVENT_COLUMNS[:-1]))
    await db.copy_records_to_table(
        "consent_events",
        records=[
            (*values(e), None if e["evidence"] is None else orjson.dumps(e["evidence"]).decode()) for e in events
        ],
        columns=[name for name, _ in _EVENT_COLUMNS],
    )


async def copy_states(session: AsyncSession, newest: list[dict], expiries: dict) -> None:
    """move_states, with the rows sent by COPY."""
    values = itemgetter(*(name for name, _ in _STATE_COLUMNS))
    await through_temp_table(
        await raw_connection(session), create=CREATE_STATES, table=_STATES,
        records=[(n, *values(e), expiries.get(e["event_id"])) for n, e in enumerate(newest)],
        statement=MOVE_COPIED_STATES,
    )


async def open_chains(session: AsyncSession, *, tenant: str, heads: list[tuple]) -> None:
    """The chains of subjects created in this transaction, with their heads ((subject_id, length, head event, head
    hash), in subject order): nobody else can have written for them yet."""
    db = await raw_connection(session)
    await db.copy_records_to_table(
        "ledger_chains", records=[(s, tenant, n, e, h) for s, n, e, h in heads], columns=_CHAIN_COLUMNS
    )


async def move_heads(session: AsyncSession, heads: list[tuple]) -> None:
    """Move the heads of chains locked in this transaction ((subject_id, length, head event, head hash))."""
    db = await raw_connection(session)
    await db.executemany(MOVE_HEAD, heads)
