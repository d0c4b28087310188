"""The change feed: one row for every change of a consent state, in the order clients must apply them."""

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.models.base import BigSerial, UTCDateTime


class ConsentChange(SQLModel, table=True):
    """A consent state moved to this decision. Read in (position, seq) order; see services/changes.py for why."""

    __tablename__ = "consent_changes"
    __table_args__ = (sa.Index("ix_consent_changes_feed", "tenant_id", "position", "seq"),)

    seq: int | None = Field(default=None, primary_key=True, sa_type=BigSerial)
    tenant_id: str = Field(foreign_key="tenants.key", max_length=64)
    # On PostgreSQL, a transaction id no smaller than the writer's own (0 on SQLite, whose writers queue).
    position: int = Field(sa_type=sa.BigInteger)
    subject_id: uuid.UUID = Field(foreign_key="subjects.id")
    purpose: str = Field(max_length=64)
    channel: str = Field(max_length=16)
    status: str = Field(max_length=16)
    captured_at: datetime = Field(sa_type=UTCDateTime)
    event_id: uuid.UUID


class ChangeOut(SQLModel):
    cursor: str
    event_id: uuid.UUID
    subject_id: uuid.UUID
    purpose: str
    channel: str | None
    status: str
    captured_at: datetime


class ChangesOut(SQLModel):
    changes: list[ChangeOut]
    next_cursor: str
