"""Suppression lists: identifiers denied on some channels whatever their consents, known subjects or not."""

import asyncio
import re
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import AppError, Unprocessable
from app.models import SubjectIdentifier, Suppression
from app.models.base import table_of, utcnow
from app.models.suppressions import SuppressionsIn, SuppressionsRemoveIn, SuppressionsResult
from app.services import changes
from app.services.kit import cursors, in_slices, upsert
from app.services.subjects import IdentifierKeys, normalise
from app.services.suppressions import log as suppression_log

MAX_PAGE = 1_000
# What _encode writes: a blind index (hex SHA-256) and a channel. Anything else is refused before it reaches SQL
# (PostgreSQL answers a NUL byte in a text parameter with an error, not with an empty page).
_CURSOR = re.compile(r"[0-9a-f]{64}")


def _entries(keys: IdentifierKeys, tenant: str, body: SuppressionsIn | SuppressionsRemoveIn) -> list[tuple[str, str, str]]:
    """(blind index, type, normalised value) of every entry, in blind-index order; one 422 listing every bad entry."""
    found, errors = {}, []
    for index, entry in enumerate(body.entries):
        kind, value = entry.items()[0]
        try:
            normal = normalise(kind, value, region=keys.region, loc=("body", "entries", index))
        except AppError as exc:
            errors += exc.extra["errors"]
            continue
        found[keys.blind_index(tenant, kind, normal)] = (kind, normal)
    if errors:
        raise Unprocessable(f"{len(errors)} of the entries are invalid", errors=errors)
    return [(id_hash, kind, normal) for id_hash, (kind, normal) in sorted(found.items())]


async def add(
    session: AsyncSession, keys: IdentifierKeys, *, tenant: str, actor: str, body: SuppressionsIn
) -> SuppressionsResult:
    """Suppress every entry on every channel of `body`; an entry already suppressed takes the new reason."""
    # Normalising 10,000 identifiers is CPU work: in a thread, so that the event loop keeps answering.
    entries = await asyncio.to_thread(_entries, keys, tenant, body)
    channels: list[str] = sorted(set(body.channels))
    table = table_of(Suppression)
    now = utcnow()
    rows = []
    for id_hash, kind, normal in entries:
        sealed = keys.seal(normal)
        rows += [
            {
                "tenant_id": tenant, "id_hash": id_hash, "channel": channel, "type": kind,
                "value_sealed": sealed, "reason": body.reason, "actor": actor, "created_at": now,
            }
            for channel in channels
        ]
    head = await suppression_log.lock(session, tenant=tenant)
    insert = upsert(session, table)
    # One statement executed with many parameter sets: SQLAlchemy batches it ("insertmanyvalues") and compiles
    # it once, where a multi-row VALUES clause is compiled afresh for every chunk (seconds for 40,000 rows).
    statement = insert.on_conflict_do_update(
        index_elements=["tenant_id", "id_hash", "channel"],
        set_={"reason": insert.excluded.reason, "actor": insert.excluded.actor},
        where=table.c.reason != insert.excluded.reason,
    ).returning(table.c.id_hash, table.c.channel, table.c.type, table.c.reason)
    # Only rows inserted or given a new reason come back: they are what changed.
    moved = [dict(row) for row in (await session.execute(statement, rows)).mappings()] if rows else []
    await _log(session, tenant=tenant, head=head, action=suppression_log.ADD, moved=moved, actor=actor, at=now)
    return SuppressionsResult(entries=len(entries), channels=channels, changed=len(moved))


async def remove(
    session: AsyncSession, keys: IdentifierKeys, *, tenant: str, actor: str, body: SuppressionsRemoveIn
) -> SuppressionsResult:
    """Lift the suppression of every entry on every channel of `body`; entries not suppressed are ignored."""
    # Normalising 10,000 identifiers is CPU work: in a thread, so that the event loop keeps answering.
    entries = await asyncio.to_thread(_entries, keys, tenant, body)
    channels: list[str] = sorted(set(body.channels))
    table = table_of(Suppression)
    head = await suppression_log.lock(session, tenant=tenant)
    moved: list[dict] = []
    hashes = [id_hash for id_hash, _, _ in entries]
    for chunk in in_slices(hashes):
        result = await session.execute(
            sa.delete(table).where(table.c.tenant_id == tenant, table.c.id_hash.in_(chunk), table.c.channel.in_(channels))
            .returning(table.c.id_hash, table.c.channel, table.c.type)
        )
        moved += [{**row, "reason": None} for row in result.mappings()]
    await _log(session, tenant=tenant, head=head, action=suppression_log.REMOVE, moved=moved, actor=actor, at=utcnow())
    return SuppressionsResult(entries=len(entries), channels=channels, changed=len(moved))


async def _log(
    session: AsyncSession, *, tenant: str, head: tuple, action: str, moved: list[dict], actor: str, at: datetime
) -> None:
    """Log what moved (rows of id_hash, channel, type, reason) and tell the feed: one change per identifier and
    reason, with its channels, for each subject that holds it (or none)."""
    moved.sort(key=lambda row: (row["id_hash"], row["channel"]))
    position = await suppression_log.append(
        session, tenant=tenant, head=head, entries=[{"action": action, **row} for row in moved], actor=actor, at=at
    )
    grouped: dict[tuple[str, str, str | None], list[str]] = {}
    for row in moved:
        grouped.setdefault((row["id_hash"], row["type"], row["reason"]), []).append(row["channel"])
    holders = await _holders(session, tenant=tenant, hashes=sorted({row["id_hash"] for row in moved}))
    status = "suppressed" if action == suppression_log.ADD else "released"
    await changes.record(session, [
        {
            "tenant_id": tenant, "position": position, "kind": "suppression", "subject_id": holders.get(id_hash),
            "status": status, "captured_at": at, "channels": channels, "reason": reason, "identifier_type": kind,
        }
        for (id_hash, kind, reason), channels in grouped.items()
    ])


async def _holders(session: AsyncSession, *, tenant: str, hashes: list[str]) -> dict[str, Any]:
    """The subject holding each blind index (those held by nobody are absent)."""
    table = table_of(SubjectIdentifier)
    found: dict[str, Any] = {}
    for chunk in in_slices(hashes):
        rows = await session.execute(
            sa.select(table.c.id_hash, table.c.subject_id).where(table.c.tenant_id == tenant, table.c.id_hash.in_(chunk))
        )
        found.update(dict(rows.all()))
    return found


def _encode(id_hash: str) -> str:
    return cursors.pack(id_hash.encode())


def _decode(cursor: str) -> str:
    try:
        decoded = cursors.unpack(cursor).decode("ascii")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        decoded = ""
    if _CURSOR.fullmatch(decoded) is None:
        raise Unprocessable("not a cursor of this list", loc=["query", "cursor"])
    return decoded


async def page(
    session: AsyncSession, keys: IdentifierKeys, *, tenant: str, cursor: str | None, limit: int, channel: str | None
) -> dict[str, Any]:
    """Suppressed identifiers in a stable order, `limit` at a time, each as PUT takes it: the identifier, its
    channels and reason (one entry per reason when its channels have different ones); next_cursor is null on
    the last page. Plain values (a SuppressionPage's shape, identifiers that are absent left out)."""
    table = table_of(Suppression)
    scope = [table.c.tenant_id == tenant] + ([table.c.channel == channel] if channel is not None else [])
    hashes_query = sa.select(table.c.id_hash).where(*scope).distinct().order_by(table.c.id_hash).limit(limit + 1)
    if cursor is not None:
        hashes_query = hashes_query.where(table.c.id_hash > _decode(cursor))
    hashes = list((await session.execute(hashes_query)).scalars())
    more = len(hashes) > limit
    hashes = hashes[:limit]
    rows = (
        await session.execute(
            sa.select(table).where(*scope, table.c.id_hash.in_(hashes)).order_by(table.c.id_hash, table.c.channel)
        )
    ).mappings().all() if hashes else []
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        entry = entries.get((row["id_hash"], row["reason"]))
        if entry is None:
            # An erased person's identifier stays suppressed by its blind index alone: no value to show.
            sealed = row["value_sealed"]
            shown = {row["type"]: keys.unseal(sealed)} if sealed else {"erased": True}
            entry = entries[row["id_hash"], row["reason"]] = {
                **shown, "channels": [], "reason": row["reason"], "created_at": row["created_at"],
            }
        entry["channels"].append(row["channel"])
        entry["created_at"] = min(entry["created_at"], row["created_at"])
    return {"entries": list(entries.values()), "next_cursor": _encode(hashes[-1]) if more else None}
