"""Audit: the heads of the subjects' hash chains, signed checkpoints of them, and the access log."""

import uuid
from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.models.base import BigSerial, UTCDateTime
from app.models.subjects import subject_of_tenant


class LedgerChain(SQLModel, table=True):
    """The head of one subject's hash chain: how many events it holds and the hash of the last.

    Its row is also the lock that orders writers of one subject (services/ledger/chains.py); writers of different
    subjects never wait for each other.
    """

    __tablename__ = "ledger_chains"
    __table_args__ = (sa.Index("ix_ledger_chains_tenant", "tenant_id", "subject_id"), subject_of_tenant())

    subject_id: uuid.UUID = Field(primary_key=True)
    tenant_id: str = Field(max_length=64)
    length: int = 0
    head_event_id: uuid.UUID | None = None
    head_hash: str | None = Field(default=None, max_length=64)
    # When the subject was erased: no event may join the chain after it (a writer that waited for this row sees it).
    erased_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class AuditCheckpoint(SQLModel, table=True):
    """A signed statement of every chain head of a tenant at one moment (keep its `jws` outside the database)."""

    __tablename__ = "audit_checkpoints"
    __table_args__ = (sa.Index("ix_audit_checkpoints_tenant", "tenant_id", "id"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigSerial)
    tenant_id: str = Field(foreign_key="tenants.key", max_length=64)
    created_at: datetime = Field(sa_type=UTCDateTime)
    chains: int
    events: int
    # SHA-256 over the sorted heads (services/audit/checkpoints.py), chained to the previous checkpoint's root.
    root: str = Field(max_length=64)
    previous_root: str | None = Field(default=None, max_length=64)
    jws: str = Field(sa_type=sa.Text)
    # The canonical form of the hashes it signed (services/ledger/chains.py FORMAT): one signed over another
    # format's hashes (before a migration re-hashed the chains) no longer matches the heads.
    event_format: str = Field(default="consentd-event-v2", max_length=32)


class CheckpointHead(SQLModel, table=True):
    """One chain head as a checkpoint saw it."""

    __tablename__ = "audit_checkpoint_heads"

    checkpoint_id: int = Field(primary_key=True, foreign_key="audit_checkpoints.id", sa_type=sa.BigInteger)
    subject_id: uuid.UUID = Field(primary_key=True)
    length: int
    head_event_id: uuid.UUID
    head_hash: str = Field(max_length=64)


class AccessLogEntry(SQLModel, table=True):
    """Someone read or exported subjects' data. Written by the service only; never updated or deleted."""

    __tablename__ = "access_log"
    __table_args__ = (sa.Index("ix_access_log_period", "tenant_id", "at", "seq"),)

    seq: int | None = Field(default=None, primary_key=True, sa_type=BigSerial)
    tenant_id: str = Field(foreign_key="tenants.key", max_length=64)
    at: datetime = Field(sa_type=UTCDateTime)
    client: str = Field(max_length=200)
    action: str = Field(max_length=32)
    # Null for a read of many subjects at once (an export); `detail` then says which.
    subject_id: uuid.UUID | None = None
    detail: dict | None = Field(default=None, sa_type=sa.JSON)


Problem = Literal["changed", "deleted", "inserted", "reordered", "rewritten", "state_mismatch", "suppression_mismatch"]


class VerifyProblem(SQLModel):
    event_id: uuid.UUID | None
    problem: Problem
    subject_id: uuid.UUID | None = None
    detail: str


class CheckpointRef(SQLModel):
    id: int
    created_at: datetime
    events: int
    root: str


class VerifyOut(SQLModel):
    ok: bool
    # Events read and checked; `chains`: chains seen (with `incremental`, those unchanged since the checkpoint are
    # compared by their head only).
    checked: int
    chains: int
    # Events checked whose evidence was erased with their person: they verify by the digest kept (not a problem).
    erased: int = 0
    # At most 10,000 listed; `problems_total` counts them all.
    problems: list[VerifyProblem]
    problems_total: int = 0
    # The latest signed checkpoint the events were compared with (null: none taken yet).
    checkpoint: CheckpointRef | None = None


class AccessLogOut(SQLModel):
    at: datetime
    client: str
    action: str
    subject_id: uuid.UUID | None
    detail: dict | None


class AccessLogPage(SQLModel):
    entries: list[AccessLogOut]
    next_cursor: str | None
