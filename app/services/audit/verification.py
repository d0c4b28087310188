"""Verifying a tenant's ledger: every subject's chain (chain_check.py), its head, the latest signed checkpoint, the
consent states checks read (state_check.py), the suppressions (suppression_check.py), and the requests' logs with
the subject flags checks read (request_check.py).

The events, the heads, the checkpoint's heads and the states are read as four streams ordered by subject, in one
snapshot, and merged: memory holds one subject's chain and states at a time, whatever the size of the ledger.
"""

import hashlib
from typing import Any, TypedDict

import sqlalchemy as sa
from sqlalchemy.sql import Select

from app.db import Database
from app.models import AuditCheckpoint, CheckpointHead, ConsentEvent, ConsentState, LedgerChain
from app.models.audit import CheckpointRef, Problem, VerifyOut, VerifyProblem
from app.models.base import table_of
from app.services.audit import request_check, state_check, suppression_check
from app.services.audit.chain_check import Head, check
from app.services.kit import END, snapshots
from app.services.ledger import CANONICAL_FIELDS

# An erased event is hashed with its kept evidence digest (chains.canonical_values).
_EVENT_COLUMNS = ("seq", "hash", *CANONICAL_FIELDS, "evidence", "evidence_erased_at")
_HEAD_COLUMNS = ("subject_id", "length", "head_event_id", "head_hash")
_STATE_COLUMNS = ("tenant_id", "subject_id", "purpose", "channel", *(column for column, _ in state_check.COPIED))
# Problems listed in an answer (all are counted): a ledger damaged wholesale must not exhaust memory.
MAX_PROBLEMS = 10_000


def heads_line(subject_id: Any, length: int, head_event_id: Any, head_hash: str) -> bytes:
    """One head as the checkpoint's root covers it."""
    return f"{subject_id}:{length}:{head_event_id}:{head_hash}\n".encode()


class _Queries(TypedDict):
    events: Select
    heads: Select
    checkpoint: Select
    states: Select
    orphans: Select
    unstated: Select | None  # incremental verification only


def _queries(tenant: str, checkpoint_id: int | None, incremental: bool) -> _Queries:
    events, chains, heads, state = (
        table_of(ConsentEvent), table_of(LedgerChain), table_of(CheckpointHead), table_of(ConsentState)
    )
    of_tenant = events.c.tenant_id == tenant
    states = sa.select(*(state.c[n] for n in _STATE_COLUMNS)).where(state.c.tenant_id == tenant)
    unstated = None
    if incremental:
        moved = (
            sa.select(chains.c.subject_id)
            .outerjoin(heads, sa.and_(heads.c.checkpoint_id == checkpoint_id, heads.c.subject_id == chains.c.subject_id))
            .where(chains.c.tenant_id == tenant, heads.c.head_hash.is_distinct_from(chains.c.head_hash))
        )
        of_tenant = sa.and_(of_tenant, events.c.subject_id.in_(moved))
        states, unstated = _incremental_states(states, tenant, moved)
    return {
        "events": sa.select(*(events.c[n] for n in _EVENT_COLUMNS)).where(of_tenant).order_by(events.c.subject_id, events.c.seq),
        "heads": sa.select(*(chains.c[n] for n in _HEAD_COLUMNS))
        .where(chains.c.tenant_id == tenant, chains.c.length > 0)
        .order_by(chains.c.subject_id),
        "checkpoint": sa.select(*(heads.c[n] for n in _HEAD_COLUMNS))
        .where(heads.c.checkpoint_id == (checkpoint_id or 0))
        .order_by(heads.c.subject_id),
        "states": states.order_by(state.c.subject_id, state.c.purpose, state.c.channel),
        "orphans": sa.select(state.c.event_id).where(
            state.c.tenant_id == tenant,
            ~sa.exists().where(events.c.event_id == state.c.event_id),
        ),
        "unstated": unstated,
    }


def _incremental_states(states: Select, tenant: str, moved: Select) -> tuple[Select, Select]:
    """Incremental verification skips the events of unchanged chains, but an edited state moves no head: each
    state row comes with the event it names (`e_` columns) and whether a later event of its key exists, and a
    second query finds the keys of unchanged chains' events that have no state row (state_check.against_own_event)."""
    events, state = table_of(ConsentEvent), table_of(ConsentState)
    own, later = events.alias("own"), events.alias("later")
    same_key = [later.c[n] == state.c[n] for n in state_check.KEY]
    newer = sa.exists().where(
        *same_key,
        sa.or_(
            later.c.captured_at > state.c.captured_at,
            sa.and_(later.c.captured_at == state.c.captured_at, later.c.seq > state.c.event_seq),
        ),
    )
    joined = (
        states.add_columns(
            *(own.c[n].label(f"e_{n}") for n in (*state_check.KEY, *(source for _, source in state_check.COPIED))),
            newer.label("newer"),
        )
        .select_from(state.outerjoin(own, own.c.event_id == state.c.event_id))
    )
    unstated = (
        sa.select(events.c.subject_id, events.c.purpose, events.c.channel, events.c.event_id)
        .where(
            events.c.tenant_id == tenant, events.c.subject_id.not_in(moved),
            ~sa.exists().where(*(state.c[n] == events.c[n] for n in state_check.KEY)),
        )
        # The first row of each key is the event whose state is missing.
        .order_by(events.c.subject_id, events.c.purpose, events.c.channel, events.c.captured_at.desc(), events.c.seq.desc())
    )
    return joined, unstated


async def verify(
    database: Database,
    *,
    tenant: str,
    checkpoint: AuditCheckpoint | None,
    signed_root: str | None = None,
    incremental: bool = False,
    signed_suppressions: dict[str, Any] | None = None,
) -> VerifyOut:
    """Check every event of the tenant, each chain's head, the chains against `checkpoint`'s heads, and every
    consent state against the events.

    `signed_root`: the root of the checkpoint as its signature states it (verified by the caller); the
    heads stored for the checkpoint must hash to it, else the checkpoint itself was tampered with.
    `signed_suppressions`: the suppression log's head as the checkpoint's signature states it.
    `incremental`: read only the chains that moved since the checkpoint (the others' heads are still compared);
    an old event altered without touching its chain's head is then found only by a full verification. The states
    of unchanged chains are compared with the events they name, in SQL (_incremental_states).
    """
    incremental = incremental and checkpoint is not None
    queries = _queries(tenant, checkpoint.id if checkpoint else None, incremental)
    problems = _Problems()
    checked = chains = erased = 0
    root = hashlib.sha256()
    async with snapshots.snapshot(database) as query:
        events = await query(queries["events"])
        heads = await query(queries["heads"])
        saved = await query(queries["checkpoint"]) if checkpoint else snapshots.NO_ROWS
        states = await query(queries["states"])
        event, head, mark, state = await events.next(), await heads.next(), await saved.next(), await states.next()
        while event is not END or head is not END or mark is not END or state is not END:
            subject = min(row["subject_id"] for row in (event, head, mark, state) if row is not END)
            chain = []
            while event is not END and event["subject_id"] == subject:
                chain.append(event)
                event = await events.next()
            standing = []
            while state is not END and state["subject_id"] == subject:
                standing.append(state)
                state = await states.next()
            current = saved_head = None
            if head is not END and head["subject_id"] == subject:
                current = Head(head["length"], head["head_event_id"], head["head_hash"])
                head = await heads.next()
            if mark is not END and mark["subject_id"] == subject:
                saved_head = Head(mark["length"], mark["head_event_id"], mark["head_hash"])
                root.update(heads_line(subject, mark["length"], mark["head_event_id"], mark["head_hash"]))
                mark = await saved.next()
            if chain or current is not None or saved_head is not None:
                chains += 1
            # Incremental: the events were read only for a chain whose head hash moved (the `moved` query).
            if incremental and not (current is not None and (saved_head is None or current.hash != saved_head.hash)):
                for row in standing:
                    if finding := state_check.against_own_event(row, row["newer"]):
                        problems.add(finding.event_id, finding.problem, finding.detail, subject)
                if not chain and current is not None and current == saved_head:
                    continue  # unchanged since the checkpoint
            checked += len(chain)
            erased += sum(1 for e in chain if e["evidence_erased_at"] is not None)
            findings = check(chain, current, saved_head)
            for finding in findings:
                problems.add(finding.event_id, finding.problem, finding.detail, subject)
            if not incremental or chain:
                explained = {finding.event_id for finding in findings} if findings else ()
                for finding in state_check.check(chain, standing, explained):
                    problems.add(finding.event_id, finding.problem, finding.detail, subject)
        async for row in await query(queries["orphans"]):
            if row["event_id"] not in problems.named:
                problems.add(row["event_id"], "deleted", "a consent state stands on this event, which is missing")
        if queries["unstated"] is not None:
            await _unstated(await query(queries["unstated"]), problems)
        await suppression_check.check(
            query, tenant=tenant, report=lambda detail: problems.add(None, "suppression_mismatch", detail),
            signed=signed_suppressions,
        )
        await request_check.check(
            query, tenant=tenant, report=lambda detail: problems.add(None, "changed", detail),
            mismatch=lambda subject_id, detail: problems.add(None, state_check.PROBLEM, detail, subject_id),
        )
    if checkpoint is not None and signed_root is not None and root.hexdigest() != signed_root:
        problems.add(None, "rewritten", f"the heads stored for checkpoint {checkpoint.id} are not the ones its signature covers")
    ref = None
    if checkpoint:
        assert checkpoint.id is not None, "a stored checkpoint has its id"
        ref = CheckpointRef(id=checkpoint.id, created_at=checkpoint.created_at, events=checkpoint.events, root=checkpoint.root)
    return VerifyOut(
        ok=problems.total == 0, checked=checked, chains=chains, erased=erased, problems=problems.listed,
        problems_total=problems.total, checkpoint=ref,
    )


async def _unstated(rows: snapshots.Rows, problems: "_Problems") -> None:
    """Keys of unchanged chains' events without a state row (incremental): a check would answer no_consent."""
    key = None
    async for row in rows:
        if (row["subject_id"], row["purpose"], row["channel"]) != key:
            key = (row["subject_id"], row["purpose"], row["channel"])
            detail = f"no consent state for {state_check.describe(key[1:])}, which the subject's events give"
            problems.add(row["event_id"], state_check.PROBLEM, detail, row["subject_id"])


class _Problems:
    """The findings: every one counted, the first MAX_PROBLEMS listed."""

    def __init__(self) -> None:
        self.listed: list[VerifyProblem] = []
        self.named: set = set()
        self.total = 0

    def add(self, event_id: Any, problem: Problem, detail: str, subject_id: Any = None) -> None:
        self.total += 1
        self.named.add(event_id)
        if len(self.listed) < MAX_PROBLEMS:
            self.listed.append(VerifyProblem(event_id=event_id, problem=problem, subject_id=subject_id, detail=detail))


