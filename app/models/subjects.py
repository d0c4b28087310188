"""Subjects (the people a tenant holds consents for) and their identifiers, found by a keyed hash."""

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.models.base import UTCDateTime, utcnow


class Subject(SQLModel, table=True):
    __tablename__ = "subjects"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.key", index=True, max_length=64)
    # Standing states that override consents (later: "restricted", "erased").
    flags: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    # Set when this subject's device was linked to a known person: its history was copied there (devices.link).
    merged_into: uuid.UUID | None = Field(default=None, foreign_key="subjects.id")
    # The change feed's position of the last change of its flags (services/changes/feed.py).
    feed_position: int = Field(default=0, sa_type=sa.BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class SubjectIdentifier(SQLModel, table=True):
    """One identifier of a subject. `id_hash` is the blind index; `value_sealed` the encrypted value."""

    __tablename__ = "subject_identifiers"

    tenant_id: str = Field(primary_key=True, foreign_key="tenants.key", max_length=64)
    id_hash: str = Field(primary_key=True, max_length=64)
    subject_id: uuid.UUID = Field(foreign_key="subjects.id", index=True)
    type: str = Field(max_length=16)
    value_sealed: str = Field(sa_type=sa.Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class IdentifierOut(SQLModel):
    type: str
    value: str


class SubjectOut(SQLModel):
    subject_id: uuid.UUID
    identifiers: list[IdentifierOut]
    created_at: datetime
    flags: list[str]
    merged_into: uuid.UUID | None = None
