"""Verifying a tenant's ledger: every subject's chain (chain_check.py), its head, and the latest signed checkpoint.

The events, the heads and the checkpoint's heads are read as three streams ordered by subject, in one
snapshot, and merged: memory holds one subject's chain at a time, whatever the size of the ledger.
"""

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa

from app.db import Database, acquire
from app.models import AuditCheckpoint, CheckpointHead, ConsentEvent, ConsentState, LedgerChain
from app.models.audit import CheckpointRef, VerifyOut, VerifyProblem
from app.services.chain_check import Head, check
from app.services.chains import CANONICAL_FIELDS

_EVENT_COLUMNS = ("seq", "hash", *CANONICAL_FIELDS)
_HEAD_COLUMNS = ("subject_id", "length", "head_event_id", "head_hash")
_BATCH = 5_000
# Seconds one batch may take: the pool's command timeout is for requests, and the orphan query is one long fetch.
_FETCH_TIMEOUT = 600
# Problems listed in an answer (all are counted): a ledger damaged wholesale must not exhaust memory.
MAX_PROBLEMS = 10_000

_END = object()


def heads_line(subject_id: Any, length: int, head_event_id: Any, head_hash: str) -> bytes:
    """One head as the checkpoint's root covers it."""
    return f"{subject_id}:{length}:{head_event_id}:{head_hash}\n".encode()


class _Rows:
    """A query's rows fetched a batch at a time: next() costs a list index while the batch lasts."""

    def __init__(self, fetch: Callable[[], Awaitable[list]]) -> None:
        self._fetch, self._rows, self._at = fetch, [], 0

    async def next(self) -> Any:
        if self._at == len(self._rows):
            self._rows, self._at = await self._fetch(), 0
            if not self._rows:
                self._fetch = _no_rows
                return _END
        row = self._rows[self._at]
        self._at += 1
        return row


async def _no_rows() -> list:
    return []


@asynccontextmanager
async def _snapshot(database: Database, tenant: str) -> AsyncIterator[Callable[..., Awaitable[_Rows]]]:
    """A function opening a query (PostgreSQL SQL with $1 = tenant, or a SQLAlchemy select) in one snapshot."""
    if database.pool is not None:
        async with acquire(database.pool) as connection:
            async with connection.transaction(isolation="repeatable_read", readonly=True):

                async def open_pg(sql: str, *args: Any) -> _Rows:
                    cursor = await connection.cursor(sql, tenant, *args, timeout=_FETCH_TIMEOUT)
                    return _Rows(lambda: cursor.fetch(_BATCH, timeout=_FETCH_TIMEOUT))

                yield open_pg
        return
    async with database.reading() as connection:

        async def open_sql(query: Any, *_: Any) -> _Rows:
            result = (await connection.stream(query)).mappings()
            return _Rows(lambda: result.fetchmany(_BATCH))

        yield open_sql


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
    problems = _Problems()
    checked = chains = 0
    root = hashlib.sha256()
    async with _snapshot(database, tenant) as query:
        events = await (query(queries["events"], checkpoint.id) if incremental else query(queries["events"]))
        heads = await query(queries["heads"])
        saved = await query(queries["checkpoint"], checkpoint.id) if checkpoint else _Rows(_no_rows)
        event, head, mark = await events.next(), await heads.next(), await saved.next()
        while event is not _END or head is not _END or mark is not _END:
            subject = min(row["subject_id"] for row in (event, head, mark) if row is not _END)
            chain = []
            while event is not _END and event["subject_id"] == subject:
                chain.append(event)
                event = await events.next()
            current = saved_head = None
            if head is not _END and head["subject_id"] == subject:
                current = Head(head["length"], head["head_event_id"], head["head_hash"])
                head = await heads.next()
            if mark is not _END and mark["subject_id"] == subject:
                saved_head = Head(mark["length"], mark["head_event_id"], mark["head_hash"])
                root.update(heads_line(subject, mark["length"], mark["head_event_id"], mark["head_hash"]))
                mark = await saved.next()
            chains += 1
            if incremental and not chain and current is not None and current == saved_head:
                continue  # unchanged since the checkpoint
            checked += len(chain)
            for finding in check(chain, current, saved_head):
                problems.add(finding.event_id, finding.problem, finding.detail, subject)
        orphans = await query(queries["orphans"])
        while (row := await orphans.next()) is not _END:
            if row["event_id"] not in problems.named:
                problems.add(row["event_id"], "deleted", "a consent state stands on this event, which is missing")
    if checkpoint is not None and signed_root is not None and root.hexdigest() != signed_root:
        problems.add(None, "rewritten", f"the heads stored for checkpoint {checkpoint.id} are not the ones its signature covers")
    ref = CheckpointRef(id=checkpoint.id, created_at=checkpoint.created_at, events=checkpoint.events, root=checkpoint.root) if checkpoint else None
    return VerifyOut(
        ok=problems.total == 0, checked=checked, chains=chains, problems=problems.listed, problems_total=problems.total,
        checkpoint=ref,
    )


class _Problems:
    """The findings: every one counted, the first MAX_PROBLEMS listed."""

    def __init__(self) -> None:
        self.listed: list[VerifyProblem] = []
        self.named: set = set()
        self.total = 0

    def add(self, event_id: Any, problem: str, detail: str, subject_id: Any = None) -> None:
        self.total += 1
        self.named.add(event_id)
        if len(self.listed) < MAX_PROBLEMS:
            self.listed.append(VerifyProblem(event_id=event_id, problem=problem, subject_id=subject_id, detail=detail))


