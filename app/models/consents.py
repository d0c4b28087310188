"""The consent ledger: append-only events and the current-state projection kept beside them."""

import uuid
from datetime import datetime
from typing import Annotated

import sqlalchemy as sa
from pydantic import Field as Bounds
from sqlmodel import Field, SQLModel

from app.models.base import BigSerial, UTCDateTime, new_id, utcnow
from app.models.common import Channel, Evidence, Identifiers, PurposeKey, Schema, Status, SubjectRef, Timestamp, text
from app.models.subjects import subject_of_tenant

# Events and states of a purpose without channels store this instead of NULL, so the state's key is total.
NO_CHANNEL = ""


class ConsentEvent(SQLModel, table=True):
    """One decision as it was received. Never updated, never deleted, except that erasing the person destroys its
    evidence, once: `evidence` becomes null, `evidence_sha256` keeps the digest the hash committed to."""

    __tablename__ = "consent_events"
    __table_args__ = (
        sa.Index("ix_consent_events_subject_order", "tenant_id", "subject_id", "captured_at", "seq"),
        # The audit export reads a tenant's events of a period in captured_at order.
        sa.Index("ix_consent_events_period", "tenant_id", "captured_at", "seq"),
        # ... or in recorded_at order (what was imported today, whatever moment it describes).
        sa.Index("ix_consent_events_recorded", "tenant_id", "recorded_at", "seq"),
        subject_of_tenant(),
    )

    seq: int | None = Field(default=None, primary_key=True, sa_type=BigSerial)
    event_id: uuid.UUID = Field(default_factory=new_id, unique=True)
    tenant_id: str = Field(max_length=64)
    subject_id: uuid.UUID
    purpose: str = Field(max_length=64)
    purpose_version: int
    channel: str = Field(max_length=16)
    status: str = Field(max_length=16)
    captured_at: datetime = Field(sa_type=UTCDateTime)
    recorded_at: datetime = Field(sa_type=UTCDateTime)
    source: str = Field(max_length=64)
    method: str = Field(default="api", max_length=32)
    policy_version: str | None = Field(default=None, max_length=64)
    collection_point: str | None = Field(default=None, max_length=200)
    actor: str = Field(max_length=200)
    evidence: dict | None = Field(default=None, sa_type=sa.JSON)
    # The subject's hash chain (services/ledger/chains.py): position in it (1, 2, ...), the event before, and the
    # SHA-256 of this event's canonical bytes, which include the previous hash. Null only on a row written
    # behind the service's back, which verification reports.
    chain_index: int | None = None
    prev_event_id: uuid.UUID | None = None
    prev_hash: str | None = Field(default=None, max_length=64)
    hash: str | None = Field(default=None, max_length=64)
    # Set when the person was erased (services/subjects/erasure.py): the evidence is gone, its digest stays.
    evidence_sha256: str | None = Field(default=None, max_length=64)
    evidence_erased_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ConsentState(SQLModel, table=True):
    """The decision that stands for (subject, purpose, channel): latest captured_at, then latest recorded."""

    __tablename__ = "consent_state"
    __table_args__ = (subject_of_tenant(),)

    tenant_id: str = Field(primary_key=True, max_length=64)
    subject_id: uuid.UUID = Field(primary_key=True)
    purpose: str = Field(primary_key=True, max_length=64)
    channel: str = Field(primary_key=True, max_length=16)
    status: str = Field(max_length=16)
    captured_at: datetime = Field(sa_type=UTCDateTime)
    recorded_at: datetime = Field(sa_type=UTCDateTime)
    event_seq: int = Field(sa_type=sa.BigInteger)
    event_id: uuid.UUID
    purpose_version: int
    policy_version: str | None = Field(default=None, max_length=64)
    # The change feed's position of the change that set this state (services/changes/feed.py).
    feed_position: int = Field(default=0, sa_type=sa.BigInteger)


class IdempotencyRecord(SQLModel, table=True):
    """The first answer given to an Idempotency-Key, replayed for retries of the same body."""

    __tablename__ = "idempotency_keys"

    tenant_id: str = Field(primary_key=True, foreign_key="tenants.key", max_length=64)
    key: str = Field(primary_key=True, max_length=255)
    request_hash: str = Field(max_length=64)
    status_code: int | None = None
    response: dict | None = Field(default=None, sa_type=sa.JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class ImportedRecord(SQLModel, table=True):
    """A digest of each imported record, so that importing the same file again stores nothing twice."""

    __tablename__ = "consent_imports"

    tenant_id: str = Field(primary_key=True, foreign_key="tenants.key", max_length=64)
    record_hash: str = Field(primary_key=True, max_length=64)
    imported_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class DecisionIn(Schema):
    purpose: PurposeKey
    channel: Channel | None = None
    status: Status


class ConsentRecordIn(Schema):
    subject: SubjectRef
    identifiers: Identifiers | None = None
    decisions: list[DecisionIn] = Bounds(min_length=1, max_length=100)
    captured_at: Timestamp | None = None
    source: Annotated[str, text(64, 1)] = "api"
    policy_version: Annotated[str, text(64, 1)] | None = None
    collection_point: Annotated[str, text(200, 1)] | None = None
    evidence: Evidence = None


class ConsentEventOut(SQLModel):
    event_id: uuid.UUID
    subject_id: uuid.UUID
    purpose: str
    purpose_version: int
    channel: str | None
    status: str
    captured_at: datetime
    recorded_at: datetime
    source: str
    policy_version: str | None
    collection_point: str | None
    actor: str
    # How it was given: api, import, banner, gpc (a Global Privacy Control signal), link (copied from a device).
    method: str = "api"


class ConsentRecordOut(SQLModel):
    subject_id: uuid.UUID
    events: list[ConsentEventOut]


class ConsentStateOut(SQLModel):
    purpose: str
    channel: str | None
    status: str
    effective: bool
    captured_at: datetime
    expires_at: datetime | None
    event_id: uuid.UUID
    policy_version: str | None


class SubjectConsentsOut(SQLModel):
    subject_id: uuid.UUID
    as_of: datetime
    # Given: only decisions recorded by then count (what the ledger said at that moment).
    known_at: datetime | None = None
    consents: list[ConsentStateOut]


class HistoryOut(SQLModel):
    events: list[ConsentEventOut]
    next_cursor: str | None


class ImportLineError(SQLModel):
    line: int
    errors: list[dict]


class ImportResult(SQLModel):
    lines: int
    imported: int
    skipped: int
    events: int
