"""The suppression log: every change the API makes to a tenant's suppression list, append-only and hash-chained.

Checks read the `suppressions` table, so a row added, changed or deleted there behind the service's back would
change their answers. The log is what the table must be: replaying it gives every (identifier, channel) and its
reason, and verification (services/audit/verification.py) compares the two (`suppression_mismatch`). Each logged change's
hash covers the one before it, so the log itself cannot be edited unseen either. The head row
(`suppression_chains`) is the lock that orders a tenant's suppression writers, and carries the feed position of the
tenant's last suppression change (services/changes/feed.py).
"""

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import SuppressionChain, SuppressionEvent
from app.models.base import table_of
from app.services import changes
from app.services.kit import is_postgres, upsert

FORMAT = "consentd-suppression-v1"
GENESIS = "0" * 64
ADD, REMOVE = "add", "remove"


def event_hash(event: Mapping[str, Any]) -> str:
    """SHA-256 of a logged change's canonical bytes (a JSON array, fields in this order; docs/audit.md)."""
    at = event["at"].astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"
    values = [
        FORMAT, event["tenant_id"], event["chain_index"], event["prev_hash"], event["action"], event["id_hash"],
        event["channel"], event["type"], event["reason"], event["actor"], at,
    ]
    return hashlib.sha256(orjson.dumps(values)).hexdigest()


async def lock(session: AsyncSession, *, tenant: str) -> tuple[int, str, int]:
    """Take the tenant's suppression lock until commit; the head (length, hash, feed position) as it stands."""
    table = table_of(SuppressionChain)
    claim = upsert(session, table).values(tenant_id=tenant, length=0, head_hash=None, feed_position=0)
    if is_postgres(session):
        # A no-op update takes the row lock, and answers the head in the same round trip.
        statement = claim.on_conflict_do_update(index_elements=["tenant_id"], set_={"length": table.c.length})
        row = (await session.execute(statement.returning(table.c.length, table.c.head_hash, table.c.feed_position))).one()
    else:
        # SQLite's writers already queue for the one write lock.
        await session.execute(claim.on_conflict_do_nothing(index_elements=["tenant_id"]))
        row = (
            await session.execute(
                sa.select(table.c.length, table.c.head_hash, table.c.feed_position).where(table.c.tenant_id == tenant)
            )
        ).one()
    return row[0], row[1] or GENESIS, row[2]


async def append(
    session: AsyncSession, *, tenant: str, head: tuple[int, str, int], entries: list[dict[str, Any]], actor: str, at: datetime
) -> int:
    """Log `entries` ({action, id_hash, channel, type, reason}) after `head` (from `lock`, in this transaction);
    the feed position for the changes they make."""
    length, prev_hash, feed_position = head
    events = []
    for entry in entries:
        length += 1
        event = {"tenant_id": tenant, "chain_index": length, "prev_hash": prev_hash, "actor": actor, "at": at, **entry}
        event["hash"] = prev_hash = event_hash(event)
        events.append(event)
    table = table_of(SuppressionChain)
    position = (
        sa.text(changes.PG_POSITION.format(after=":previous")).bindparams(previous=feed_position)
        if is_postgres(session) else sa.literal(0)
    )
    if events:
        await session.execute(sa.insert(table_of(SuppressionEvent)), events)
    moved = await session.execute(
        sa.update(table).where(table.c.tenant_id == tenant)
        .values(length=length, head_hash=prev_hash if events else table.c.head_hash, feed_position=position)
        .returning(table.c.feed_position)
    )
    return moved.scalar_one()
