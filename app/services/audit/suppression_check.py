"""Verifying a tenant's suppression list against its log (services/suppressions/log.py), in constant memory.

Two passes over one snapshot: the log in chain order (every hash and link, and the head), then the log's last
change of each (identifier, channel) merged with the list in the same order. Anything that differs is a
`suppression_mismatch`: a row added, changed or removed behind the service's back, or a log entry altered.
"""

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from app.models import Suppression, SuppressionChain, SuppressionEvent
from app.models.base import table_of
from app.services.kit import END, Query, Rows
from app.services.suppressions import ADD, GENESIS, event_hash

_LOG_COLUMNS = ("seq", "tenant_id", "chain_index", "action", "id_hash", "channel", "type", "reason", "actor", "at", "prev_hash", "hash")
Report = Callable[[str], None]


async def check(query: Query, *, tenant: str, report: Report, signed: dict[str, Any] | None = None) -> None:
    """Report every way the tenant's suppressions disagree with their log (`report(detail)` once for each).

    `signed`: the log's head as a signed checkpoint states it ({length, head_hash}): the log must still pass
    through it, which catches a log rewritten with every hash recomputed."""
    log, listed, heads = table_of(SuppressionEvent), table_of(Suppression), table_of(SuppressionChain)
    head = [row async for row in await query(sa.select(heads.c.length, heads.c.head_hash).where(heads.c.tenant_id == tenant))]
    length, head_hash = (head[0]["length"], head[0]["head_hash"]) if head else (0, None)
    index, prev = 0, GENESIS
    entries = sa.select(*(log.c[n] for n in _LOG_COLUMNS)).where(log.c.tenant_id == tenant).order_by(log.c.chain_index, log.c.seq)
    async for row in await query(entries):
        index += 1
        if row["chain_index"] != index or row["prev_hash"] != prev:
            report(f"suppression log entry {row['chain_index']} does not follow entry {index - 1}: one was removed, added or moved")
            index = row["chain_index"]
        if event_hash(row) != row["hash"]:
            report(f"suppression log entry {row['chain_index']} no longer gives its hash: it was changed")
        if signed and row["chain_index"] == signed["length"] and row["hash"] != signed["head_hash"]:
            report(f"the suppression log up to entry {signed['length']} is not the one the signed checkpoint holds: rewritten")
        prev = row["hash"]
    if signed and index < signed["length"]:
        report(f"the signed checkpoint saw {signed['length']} suppression log entries, the log holds {index}")
    if index != length or (length and prev != head_hash):
        report(f"the suppression log ends at entry {index}, its head says {length}: entries were removed or added")

    standing = _LastPerKey(await query(
        sa.select(log.c.id_hash, log.c.channel, log.c.action, log.c.reason, log.c.type)
        .where(log.c.tenant_id == tenant).order_by(log.c.id_hash, log.c.channel, log.c.chain_index)
    ))
    rows = await query(
        sa.select(listed.c.id_hash, listed.c.channel, listed.c.reason, listed.c.type)
        .where(listed.c.tenant_id == tenant).order_by(listed.c.id_hash, listed.c.channel)
    )
    expected, actual = await standing.next(), await rows.next()
    while expected is not END or actual is not END:
        key_e = (expected["id_hash"], expected["channel"]) if expected is not END else None
        key_a = (actual["id_hash"], actual["channel"]) if actual is not END else None
        if key_a is None or (key_e is not None and key_e < key_a):
            if expected["action"] == ADD:
                report(f"a suppression on {expected['channel']} the log holds is missing from the list: it was removed")
            expected = await standing.next()
        elif key_e is None or key_a < key_e:
            report(f"a suppression on {actual['channel']} is in the list but not in the log: it was added")
            actual = await rows.next()
        else:
            if expected["action"] != ADD:
                report(f"a suppression on {actual['channel']} the log released is in the list: it was added back")
            elif (expected["reason"], expected["type"]) != (actual["reason"], actual["type"]):
                report(f"a suppression on {actual['channel']} has reason {actual['reason']}, the log says {expected['reason']}")
            expected, actual = await standing.next(), await rows.next()


class _LastPerKey:
    """From log rows ordered by (id_hash, channel) then chain position: the last change of each key in turn."""

    def __init__(self, rows: Rows) -> None:
        self._rows = rows
        self._ahead: Any = None

    async def next(self) -> Any:
        last = self._ahead if self._ahead is not None else await self._rows.next()
        if last is END:
            return END
        while (row := await self._rows.next()) is not END:
            if (row["id_hash"], row["channel"]) != (last["id_hash"], last["channel"]):
                self._ahead = row
                return last
            last = row
        self._ahead = END
        return last
