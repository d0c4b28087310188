"""Verifying a tenant's ledger: every subject's chain (chain_check.py), its head, and the latest signed checkpoint.

The events, the heads and the checkpoint's heads are read as three streams ordered by subject, in one
snapshot, and merged: memory holds one subject's chain at a time, whatever the size of the ledger.
"""

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa

from app.db import Database, acquire
from app.models import AuditCheckpoint, CheckpointHead, ConsentEvent, ConsentState, LedgerChain
from app.models.audit import CheckpointRef, VerifyOut, VerifyProblem
from app.services.chain_check import Finding, Head, check
from app.services.chains import CANONICAL_FIELDS

_EVENT_COLUMNS = ("seq", "hash", *CANONICAL_FIELDS)
_HEAD_COLUMNS = ("subject_id", "length", "head_event_id", "head_hash")
_PREFETCH = 5_000

_END = object()


def heads_line(subject_id: Any, length: int, head_event_id: Any, head_hash: str) -> bytes:
    """One head as the checkpoint's root covers it."""
    return f"{subject_id}:{length}:{head_event_id}:{head_hash}\n".encode()


class _Source:
    """The rows verification reads, in subject order, from one snapshot."""

    def __init__(self, database: Database, tenant: str) -> None:
        self.database, self.tenant = database, tenant

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Callable[[str, Any], AsyncIterator[Any]]]:
        """A function streaming (PostgreSQL SQL with $1 = tenant, or a SQLAlchemy select) in one snapshot."""
        if self.database.pool is not None:
            async with acquire(self.database.pool) as connection:
                # The pool's command timeout is for requests; a full verification reads for longer.
                async with connection.transaction(isolation="repeatable_read", readonly=True):

                    async def stream_pg(sql: str, *args: Any) -> AsyncIterator[Any]:
                        async for row in connection.cursor(sql, self.tenant, *args, prefetch=_PREFETCH, timeout=None):
                            yield row

                    yield stream_pg
            return
        async with self.database.reading() as connection:

            async def stream_sql(query: Any, *_: Any) -> AsyncIterator[Any]:
                result = await connection.stream(query)
                async for row in result.mappings():
                    yield row

            yield stream_sql


# Incremental: only the chains whose head is not the one the checkpoint holds.
_PG_MOVED = (
    "AND subject_id IN (SELECT c.subject_id FROM ledger_chains c LEFT JOIN audit_checkpoint_heads h "
    "ON h.checkpoint_id = $2 AND h.subject_id = c.subject_id WHERE c.tenant_id = $1 AND h.head_hash IS DISTINCT FROM c.head_hash)"
)


def _queries(postgres: bool, tenant: str, checkpoint_id: int | None, incremental: bool) -> dict[str, Any]:
    if postgres:
        moved = _PG_MOVED if incremental else ""
        return {
            "events": f"SELECT {', '.join(_EVENT_COLUMNS)} FROM consent_events WHERE tenant_id = $1 {moved} ORDER BY subject_id, seq",
            "heads": f"SELECT {', '.join(_HEAD_COLUMNS)} FROM ledger_chains WHERE tenant_id = $1 AND length > 0 ORDER BY subject_id",
            "checkpoint": (
                f"SELECT {', '.join(_HEAD_COLUMNS)} FROM audit_checkpoint_heads h JOIN audit_checkpoints c "
                "ON c.id = h.checkpoint_id WHERE c.tenant_id = $1 AND c.id = $2 ORDER BY subject_id"
            ),
            "orphans": (
                "SELECT s.event_id FROM consent_state s WHERE s.tenant_id = $1 "
                "AND NOT EXISTS (SELECT 1 FROM consent_events e WHERE e.event_id = s.event_id)"
            ),
        }
    events, chains, heads, state = (
        ConsentEvent.__table__, LedgerChain.__table__, CheckpointHead.__table__, ConsentState.__table__
    )
    of_tenant = events.c.tenant_id == tenant
    if incremental:
        moved = (
            sa.select(chains.c.subject_id)
            .outerjoin(heads, sa.and_(heads.c.checkpoint_id == checkpoint_id, heads.c.subject_id == chains.c.subject_id))
            .where(chains.c.tenant_id == tenant, heads.c.head_hash.is_distinct_from(chains.c.head_hash))
        )
        of_tenant = sa.and_(of_tenant, events.c.subject_id.in_(moved))
    return {
        "events": sa.select(*(events.c[n] for n in _EVENT_COLUMNS)).where(of_tenant).order_by(events.c.subject_id, events.c.seq),
        "heads": sa.select(*(chains.c[n] for n in _HEAD_COLUMNS))
        .where(chains.c.tenant_id == tenant, chains.c.length > 0)
        .order_by(chains.c.subject_id),
        "checkpoint": sa.select(*(heads.c[n] for n in _HEAD_COLUMNS))
        .where(heads.c.checkpoint_id == (checkpoint_id or 0))
        .order_by(heads.c.subject_id),
        "orphans": sa.select(state.c.event_id).where(
            state.c.tenant_id == tenant,
            ~sa.exists().where(events.c.event_id == state.c.event_id),
        ),
    }


async def _next(iterator: AsyncIterator[Any]) -> Any:
    return await anext(iterator, _END)


async def latest_checkpoint(database: Database, *, tenant: str) -> AuditCheckpoint | None:
    table = AuditCheckpoint.__table__
    async with database.reading() as connection:
        row = (
            await connection.execute(
                sa.select(table).where(table.c.tenant_id == tenant).order_by(table.c.id.desc()).limit(1)
            )
        ).mappings().first()
    return AuditCheckpoint.model_validate(dict(row)) if row else None


async def verify(
    database: Database,
    *,
    tenant: str,
    checkpoint: AuditCheckpoint | None,
    signed_root: str | None = None,
    incremental: bool = False,
) -> VerifyOut:
    """Check every event of the tenant, each chain's head, and the chains against `checkpoint`'s heads.

    `signed_root`: the root of the checkpoint as its signature states it (verified by the caller); the
    heads stored for the checkpoint must hash to it, else the checkpoint itself was tampered with.
    `incremental`: read only the chains that moved since the checkpoint (the others' heads are still compared);
    an old event altered without touching its chain's head is then found only by a full verification.
    """
    incremental = incremental and checkpoint is not None
    queries = _queries(database.pool is not None, tenant, checkpoint.id if checkpoint else None, incremental)
    problems: list[VerifyProblem] = []
    checked = chains = 0
    root = hashlib.sha256()
    async with _Source(database, tenant).snapshot() as stream:
        events = stream(queries["events"], checkpoint.id) if incremental else stream(queries["events"])
        heads = stream(queries["heads"])
        saved = stream(queries["checkpoint"], checkpoint.id) if checkpoint else _empty()
        event, head, mark = await _next(events), await _next(heads), await _next(saved)
        while event is not _END or head is not _END or mark is not _END:
            subject = min(row["subject_id"] for row in (event, head, mark) if row is not _END)
            chain: list[dict] = []
            while event is not _END and event["subject_id"] == subject:
                chain.append(dict(event))
                event = await _next(events)
            current = saved_head = None
            if head is not _END and head["subject_id"] == subject:
                current = Head(head["length"], head["head_event_id"], head["head_hash"])
                head = await _next(heads)
            if mark is not _END and mark["subject_id"] == subject:
                saved_head = Head(mark["length"], mark["head_event_id"], mark["head_hash"])
                root.update(heads_line(subject, mark["length"], mark["head_event_id"], mark["head_hash"]))
                mark = await _next(saved)
            chains += 1
            if incremental and not chain and current is not None and current == saved_head:
                continue  # unchanged since the checkpoint
            checked += len(chain)
            problems.extend(_problem(f, subject) for f in check(chain, current, saved_head))
        reported = {p.event_id for p in problems}
        async for row in stream(queries["orphans"]):
            if row["event_id"] not in reported:
                problems.append(VerifyProblem(
                    event_id=row["event_id"], problem="deleted", detail="a consent state stands on this event, which is missing",
                ))
    if checkpoint is not None and signed_root is not None and root.hexdigest() != signed_root:
        problems.append(VerifyProblem(
            event_id=None, problem="rewritten",
            detail=f"the heads stored for checkpoint {checkpoint.id} are not the ones its signature covers",
        ))
    ref = CheckpointRef(id=checkpoint.id, created_at=checkpoint.created_at, events=checkpoint.events, root=checkpoint.root) if checkpoint else None
    return VerifyOut(ok=not problems, checked=checked, chains=chains, problems=problems, checkpoint=ref)


async def _empty() -> AsyncIterator[Any]:
    return
    yield


def _problem(finding: Finding, subject: Any) -> VerifyProblem:
    return VerifyProblem(event_id=finding.event_id, problem=finding.problem, subject_id=subject, detail=finding.detail)
