"""The change feed: every change of what checks answer, in an order a follower can apply without missing one.

Three kinds: `consent` (a consent state moved: its decision, the purpose version it was given under, and when the
grant expires), `suppression` (an identifier suppressed or released on some channels; the subject when one holds
it, never the identifier) and `subject` (restricted, unrestricted, erased).

Why not a sequence: sequence numbers are taken before commit, so a slow transaction can commit seq 10 after a
reader has already moved past seq 11. Instead each change carries a *position*: on PostgreSQL, a transaction
id (xid8) no smaller than the id of the transaction that wrote it. A reader returns only positions below its
snapshot's xmin, the oldest transaction still running: every transaction below it has finished, so no change
can later appear below a cursor a reader has handed out. The feed is read in (position, seq) order.

A change's position is at least the position of the change it replaces on the same state (`feed_position` is
carried on the state row): a transaction that waited for the row lock and wrote after a newer-numbered one
still sorts after it, so a follower applying changes in order ends at the state the database holds. Within
one position, seq follows lock order for the same state, because the row lock is held until commit.

On SQLite, writers queue (BEGIN IMMEDIATE), so seq is commit order and every position is 0.
"""

import re
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database, acquire
from app.errors import Unprocessable
from app.models import ConsentChange
from app.models.base import table_of
from app.services.kit import cursors
from app.services.purposes import api_channel

STATE_COLUMNS = (
    "tenant_id", "subject_id", "purpose", "channel", "status", "captured_at", "event_id", "purpose_version", "feed_position",
)
MAX_PAGE = 10_000
_BEGINNING = (-1, 0)
_CURSOR = re.compile(r"-?[0-9]{1,19}\.[0-9]{1,19}")
# On PostgreSQL, the position of a change written now: this transaction's id, or the position of the change it
# follows on the same thing (a state, a subject's flags, a tenant's suppressions), whichever is later.
PG_POSITION = "greatest(pg_current_xact_id()::text::bigint, {after})"


async def append(session: AsyncSession, moved: list[dict], expiries: dict) -> None:
    """Record the states that moved (rows of consent_state as they now stand) in the feed, with each grant's expiry
    by event id (SQLite; PostgreSQL does it in the same statement that moves them: pg_bulk.MOVE_STATES)."""
    if not moved:
        return
    rows = [
        {
            "tenant_id": row["tenant_id"],
            "position": row["feed_position"],
            "kind": "consent",
            "subject_id": row["subject_id"],
            "purpose": row["purpose"],
            "channel": row["channel"],
            "status": row["status"],
            "captured_at": row["captured_at"],
            "event_id": row["event_id"],
            "purpose_version": row["purpose_version"],
            "expires_at": expiries.get(row["event_id"]),
        }
        for row in moved
    ]
    await session.execute(sa.insert(table_of(ConsentChange)), rows)


async def record(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Add changes of another kind (suppression, subject), each with its `position` already taken."""
    if rows:
        table = table_of(ConsentChange)
        await session.execute(sa.insert(table), [{name: row.get(name) for name in _INSERTED} | row for row in rows])


_INSERTED = (
    "tenant_id", "position", "kind", "subject_id", "purpose", "channel", "status", "captured_at", "event_id",
    "expires_at", "purpose_version", "channels", "reason", "identifier_type",
)


def encode_cursor(position: int, seq: int) -> str:
    return cursors.pack(f"{position}.{seq}".encode())


def decode_cursor(cursor: str | None) -> tuple[int, int]:
    """(position, seq) of a cursor this service handed out; 422 for anything else."""
    if cursor is None:
        return _BEGINNING
    try:
        raw = cursors.unpack(cursor).decode()
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raw = ""
    # Exactly what encode_cursor writes: int() alone would also take " 7", "+7" and "7_0".
    if _CURSOR.fullmatch(raw) is None:
        raise Unprocessable("not a cursor of this feed", loc=["query", "after"])
    position, seq = raw.split(".")
    decoded = int(position), int(seq)
    if not (-1 <= decoded[0] < 2**63 and 0 <= decoded[1] < 2**63):
        raise Unprocessable("not a cursor of this feed", loc=["query", "after"])
    return decoded


_COLUMNS = (
    "seq, position, kind, event_id, subject_id, purpose, channel, status, captured_at, expires_at, purpose_version,"
    " channels, reason, identifier_type"
)
# Pages are read through asyncpg on PostgreSQL: a thousand rows through SQLAlchemy cost several times the query.
PG_PAGE = f"""
SELECT {_COLUMNS} FROM consent_changes
WHERE tenant_id = $1 AND (position, seq) > ($2, $3)
  AND position < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
ORDER BY position, seq
LIMIT $4
"""  # noqa: S608 - only the constant _COLUMNS is interpolated; the values are bound ($1 to $4)


async def page(database: Database, *, tenant: str, after: str | None, limit: int) -> dict[str, Any]:
    """Up to `limit` changes after the cursor, oldest first; next_cursor is where to continue (never null).

    Plain values (a ChangesOut's shape): a page of a thousand is serialised without a model pass.
    """
    position, seq = decode_cursor(after)
    if database.pool is not None:
        async with acquire(database.pool) as connection:
            rows = await connection.fetch(PG_PAGE, tenant, position, seq, limit)
    else:
        table = table_of(ConsentChange)
        query = (
            sa.select(*(table.c[name] for name in _COLUMNS.split(", ")))
            .where(table.c.tenant_id == tenant, sa.tuple_(table.c.position, table.c.seq) > sa.tuple_(position, seq))
            .order_by(table.c.position, table.c.seq)
            .limit(limit)
        )
        async with database.reading() as connection:
            rows = (await connection.execute(query)).mappings().all()
    changes = [_change(row) for row in rows]
    return {"changes": changes, "next_cursor": changes[-1]["cursor"] if changes else encode_cursor(position, seq)}


async def head(session: AsyncSession, *, tenant: str) -> str:
    """A cursor after the tenant's latest change as this transaction sees it (a follower that starts now)."""
    table = table_of(ConsentChange)
    last = (await session.execute(
        sa.select(table.c.position, table.c.seq).where(table.c.tenant_id == tenant)
        .order_by(table.c.position.desc(), table.c.seq.desc()).limit(1)
    )).first()
    return encode_cursor(*last) if last else encode_cursor(*_BEGINNING)


def _change(row: Any) -> dict[str, Any]:
    change = {
        "cursor": encode_cursor(row["position"], row["seq"]),
        "kind": row["kind"],
        "event_id": row["event_id"],
        "subject_id": row["subject_id"],
        "purpose": row["purpose"],
        "channel": api_channel(row["channel"]) if row["channel"] is not None else None,
        "status": row["status"],
        "captured_at": row["captured_at"],
        "expires_at": row["expires_at"],
    }
    if row["kind"] == "consent":
        change["purpose_version"] = row["purpose_version"]
    elif row["kind"] == "suppression":
        channels = row["channels"]
        change |= {
            "channels": orjson.loads(channels) if isinstance(channels, str) else channels,
            "reason": row["reason"], "identifier_type": row["identifier_type"],
        }
    return change
