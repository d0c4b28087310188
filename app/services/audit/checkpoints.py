"""Signed checkpoints: every chain head of a tenant at one moment, hashed into a root and signed.

A chain alone proves nothing against someone who can rewrite the database: they can recompute every hash.
A checkpoint's JWS, kept outside the database (`consentd audit checkpoint` prints it), fixes the heads as they
were; verification against it finds any chain rewritten since. Each checkpoint also names the root of the one
before it, so the checkpoints form a chain of their own.
"""

import hashlib

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database
from app.errors import NotFound
from app.models import AuditCheckpoint, CheckpointHead, LedgerChain, SuppressionChain
from app.models.audit import VerifyOut, VerifyProblem
from app.models.base import table_of, utcnow
from app.security import Signer
from app.services.audit import verification
from app.services.ledger import FORMAT

TYP = "audit-checkpoint+jwt"
OLD_FORMAT = "consentd-event-v1"


async def create(session: AsyncSession, signer: Signer, *, tenant: str) -> AuditCheckpoint:
    """Take a checkpoint of the tenant's chain heads as this transaction sees them, signed with the active key."""
    checkpoints, heads, chains = table_of(AuditCheckpoint), table_of(CheckpointHead), table_of(LedgerChain)
    previous = (
        await session.execute(
            sa.select(checkpoints.c.root).where(checkpoints.c.tenant_id == tenant).order_by(checkpoints.c.id.desc()).limit(1)
        )
    ).scalar()
    created_at = utcnow()
    checkpoint_id = (
        await session.execute(
            sa.insert(checkpoints)
            .values(
                tenant_id=tenant, created_at=created_at, chains=0, events=0, root="", previous_root=previous, jws="",
                event_format=FORMAT,
            )
            .returning(checkpoints.c.id)
        )
    ).scalar_one()
    # One statement: the heads of one snapshot, however many writers are at work.
    await session.execute(
        sa.insert(heads).from_select(
            ["checkpoint_id", "subject_id", "length", "head_event_id", "head_hash"],
            sa.select(
                sa.literal(checkpoint_id, sa.BigInteger), chains.c.subject_id, chains.c.length, chains.c.head_event_id, chains.c.head_hash
            )
            .where(chains.c.tenant_id == tenant, chains.c.length > 0),
        )
    )
    root, count, events = hashlib.sha256(), 0, 0
    rows = await session.stream(
        sa.select(heads.c.subject_id, heads.c.length, heads.c.head_event_id, heads.c.head_hash)
        .where(heads.c.checkpoint_id == checkpoint_id)
        .order_by(heads.c.subject_id)
    )
    async for subject_id, length, head_event_id, head_hash in rows:
        root.update(verification.heads_line(subject_id, length, head_event_id, head_hash))
        count, events = count + 1, events + length
    log = table_of(SuppressionChain)
    head = (await session.execute(sa.select(log.c.length, log.c.head_hash).where(log.c.tenant_id == tenant))).first()
    payload = {
        "checkpoint_id": checkpoint_id, "tenant": tenant, "created_at": created_at.isoformat(), "chains": count,
        "events": events, "root": root.hexdigest(), "previous_root": previous, "iss": signer.issuer,
        "iat": int(created_at.timestamp()),
        # The suppression log's head (services/suppressions/log.py): verification checks the log still passes through it.
        "suppressions": {"length": head.length if head else 0, "head_hash": head.head_hash if head else None},
        # The canonical form of the head hashes (absent from checkpoints signed before consentd-event-v2).
        "event_format": FORMAT,
    }
    jws = signer.sign(payload, typ=TYP)
    await session.execute(
        sa.update(checkpoints)
        .where(checkpoints.c.id == checkpoint_id)
        .values(chains=count, events=events, root=payload["root"], jws=jws)
    )
    return AuditCheckpoint(
        id=checkpoint_id, tenant_id=tenant, created_at=created_at, chains=count, events=events, root=payload["root"],
        previous_root=previous, jws=jws,
    )


async def verify(
    database: Database, signer: Signer, *, tenant: str, saved_jws: str | None = None, incremental: bool = False
) -> VerifyOut:
    """Verify the ledger against a saved checkpoint's JWS, or (none given) the latest one in the database;
    `incremental`: only the chains that moved since it (verification.verify)."""
    problems: list[VerifyProblem] = []
    if saved_jws is None:
        checkpoint = await stored(database, tenant=tenant)
        token = checkpoint.jws if checkpoint else None
    else:
        token, checkpoint = saved_jws, None
    signed_root = signed_suppressions = None
    if token is not None:
        try:
            payload = signer.verify(token, typ=TYP)
        except ValueError as exc:  # SignatureError: malformed, unknown key, wrong type, bad signature
            payload = None
            problems.append(_checkpoint_problem(f"the checkpoint's signature does not verify ({type(exc).__name__})"))
        if payload is not None:
            if payload.get("tenant") != tenant:
                raise NotFound("checkpoint of this tenant", str(payload.get("checkpoint_id")))
            signed_root = payload["root"]
            signed_suppressions = payload.get("suppressions")  # absent from checkpoints signed before the log
            if payload.get("event_format", OLD_FORMAT) != FORMAT:
                problems.append(_checkpoint_problem(_older_format(payload.get("event_format", OLD_FORMAT))))
                return await _without_checkpoint(database, tenant, problems, incremental)
            if checkpoint is None:
                checkpoint = await stored(database, tenant=tenant, checkpoint_id=int(payload["checkpoint_id"]))
                if checkpoint is None:
                    problems.append(_checkpoint_problem(f"checkpoint {payload['checkpoint_id']} is missing from the database"))
    result = await verification.verify(
        database, tenant=tenant, checkpoint=checkpoint, signed_root=signed_root, incremental=incremental,
        signed_suppressions=signed_suppressions,
    )
    result.problems[:0] = problems
    result.problems_total += len(problems)
    result.ok = result.problems_total == 0
    return result


async def _without_checkpoint(
    database: Database, tenant: str, problems: list[VerifyProblem], incremental: bool
) -> VerifyOut:
    result = await verification.verify(database, tenant=tenant, checkpoint=None, incremental=incremental)
    result.problems[:0] = problems
    result.problems_total += len(problems)
    result.ok = result.problems_total == 0
    return result


def _older_format(signed: str) -> str:
    return (
        f"the checkpoint signed {signed} hashes, and the ledger has been re-hashed as {FORMAT} since (migration "
        "20261204_0009): its heads can no longer be compared; take a new checkpoint"
    )


def _checkpoint_problem(detail: str) -> VerifyProblem:
    return VerifyProblem(event_id=None, problem="rewritten", detail=detail)


async def stored(database: Database, *, tenant: str, checkpoint_id: int | None = None) -> AuditCheckpoint | None:
    """The tenant's checkpoint `checkpoint_id` as the database holds it, or (None) its latest."""
    table = table_of(AuditCheckpoint)
    query = sa.select(table).where(table.c.tenant_id == tenant)
    if checkpoint_id is not None:
        query = query.where(table.c.id == checkpoint_id)
    else:
        # The latest over today's hashes: one signed over an older format's cannot be compared (_older_format).
        query = query.where(table.c.event_format == FORMAT).order_by(table.c.id.desc())
    async with database.reading() as connection:
        row = (await connection.execute(query.limit(1))).mappings().first()
    return AuditCheckpoint.model_validate(dict(row)) if row else None
