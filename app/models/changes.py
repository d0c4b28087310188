"""The change feed: one row for every change a follower must apply to answer checks as consentd does."""

import uuid
from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.models.base import BigSerial, UTCDateTime
from app.models.subjects import subject_of_tenant

# consent: a consent state moved; suppression: an identifier suppressed or released on some channels;
# subject: a person restricted, unrestricted or erased.
ChangeKind = Literal["consent", "suppression", "subject"]


class ConsentChange(SQLModel, table=True):
    """A change of what checks answer. Read in (position, seq) order; see services/changes/feed.py for why."""

    __tablename__ = "consent_changes"
    # A change about a subject references it with its tenant (subject_of_tenant); one about an identifier no subject
    # holds has no subject, and only its tenant is checked.
    __table_args__ = (sa.Index("ix_consent_changes_feed", "tenant_id", "position", "seq"), subject_of_tenant())

    seq: int | None = Field(default=None, primary_key=True, sa_type=BigSerial)
    tenant_id: str = Field(foreign_key="tenants.key", max_length=64)
    # On PostgreSQL, a transaction id no smaller than the writer's own (0 on SQLite, whose writers queue).
    position: int = Field(sa_type=sa.BigInteger)
    kind: str = Field(default="consent", max_length=16)
    # Null for a suppression of an identifier no subject holds.
    subject_id: uuid.UUID | None = None
    purpose: str | None = Field(default=None, max_length=64)
    channel: str | None = Field(default=None, max_length=16)
    status: str = Field(max_length=16)
    captured_at: datetime = Field(sa_type=UTCDateTime)
    event_id: uuid.UUID | None = None
    # consent: when the grant stops counting (its purpose's lifespan), and the purpose version it was given under.
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    purpose_version: int | None = None
    # suppression: the channels, the reason and the type of the identifier (never its value).
    channels: list[str] | None = Field(default=None, sa_type=sa.JSON)
    reason: str | None = Field(default=None, max_length=16)
    identifier_type: str | None = Field(default=None, max_length=16)


class ChangeOut(SQLModel):
    cursor: str
    kind: ChangeKind
    event_id: uuid.UUID | None
    subject_id: uuid.UUID | None
    purpose: str | None
    channel: str | None
    status: str
    captured_at: datetime
    expires_at: datetime | None
    purpose_version: int | None = None
    channels: list[str] | None = None
    reason: str | None = None
    identifier_type: str | None = None


class ChangesOut(SQLModel):
    changes: list[ChangeOut]
    next_cursor: str
