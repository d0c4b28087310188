"""Verifying a tenant's ledger: every subject's chain (chain_check.py), its head, and the latest signed checkpoint.

The events, the heads and the checkpoint's heads are read as three streams ordered by subject, in one
snapshot, and merged: memory holds one subject's chain at a time, whatever the size of the ledger.
"""

import hashlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import Select

from app.db import Database
from app.models import AuditCheckpoint, CheckpointHead, ConsentEvent, ConsentState, LedgerChain
from app.models.audit import CheckpointRef, VerifyOut, VerifyProblem
from app.services.chain_check import Head, check
from app.services import snapshots, suppression_check
from app.services.chains import CANONICAL_FIELDS
from app.services.snapshots import END

_EVENT_COLUMNS = ("seq", "hash", *CANONICAL_FIELDS)
_HEAD_COLUMNS = ("subject_id", "length", "head_event_id", "head_hash")
# Problems listed in an answer (all are counted): a ledger damaged wholesale must not exhaust memory.
MAX_PROBLEMS = 10_000


def heads_line(subject_id: Any, length: int, head_event_id: Any, head_hash: str) -> bytes:
    """One head as the checkpoint's root covers it."""
    return f"{subject_id}:{length}:{head_event_id}:{head_hash}\n".encode()


def _queries(tenant: str, checkpoint_id: int | None, incremental: bool) -> dict[str, Select]:
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


async def verify(
    database: Database,
    *,
    tenant: str,
    checkpoint: AuditCheckpoint | None,
    signed_root: str | None = None,
    incremental: bool = False,
    signed_suppressions: dict[str, Any] | None = None,
) -> VerifyOut:
    """Check every event of the tenant, each chain's head, and the chains against `checkpoint`'s heads.

    `signed_root`: the root of the checkpoint as its signature states it (verified by the caller); the
    heads stored for the checkpoint must hash to it, else the checkpoint itself was tampered with.
    `signed_suppressions`: the suppression log's head as the checkpoint's signature states it.
    `incremental`: read only the chains that moved since the checkpoint (the others' heads are still compared);
    an old event altered without touching its chain's head is then found only by a full verification.
    """
    incremental = incremental and checkpoint is not None
    queries = _queries(tenant, checkpoint.id if checkpoint else None, incremental)
    problems = _Problems()
    checked = chains = 0
    root = hashlib.sha256()
    async with snapshots.snapshot(database) as query:
        events = await query(queries["events"])
        heads = await query(queries["heads"])
        saved = await query(queries["checkpoint"]) if checkpoint else snapshots.NO_ROWS
        event, head, mark = await events.next(), await heads.next(), await saved.next()
        while event is not END or head is not END or mark is not END:
            subject = min(row["subject_id"] for row in (event, head, mark) if row is not END)
            chain = []
            while event is not END and event["subject_id"] == subject:
                chain.append(event)
                event = await events.next()
            current = saved_head = None
            if head is not END and head["subject_id"] == subject:
                current = Head(head["length"], head["head_event_id"], head["head_hash"])
                head = await heads.next()
            if mark is not END and mark["subject_id"] == subject:
                saved_head = Head(mark["length"], mark["head_event_id"], mark["head_hash"])
                root.update(heads_line(subject, mark["length"], mark["head_event_id"], mark["head_hash"]))
                mark = await saved.next()
            chains += 1
            if incremental and not chain and current is not None and current == saved_head:
                continue  # unchanged since the checkpoint
            checked += len(chain)
            for finding in check(chain, current, saved_head):
                problems.add(finding.event_id, finding.problem, finding.detail, subject)
        async for row in await query(queries["orphans"]):
            if row["event_id"] not in problems.named:
                problems.add(row["event_id"], "deleted", "a consent state stands on this event, which is missing")
        await suppression_check.check(
            query, tenant=tenant, report=lambda detail: problems.add(None, "suppression_mismatch", detail),
            signed=signed_suppressions,
        )
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


