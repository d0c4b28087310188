"""Subjects (the people a tenant holds consents for) and their identifiers, found by a keyed hash."""

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.models.base import UTCDateTime, new_id, utcnow


# What the rows about a subject (events, states, changes, chain heads, identifiers) reference: the subject and its
# tenant together. One foreign key check a row where there were two (the tenant, then the subject), and a row can no
# longer name a subject of another tenant.
def subject_of_tenant() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["tenant_id", "subject_id"], ["subjects.tenant_id", "subjects.id"])


class Subject(SQLModel, table=True):
    __tablename__ = "subjects"
    # The key the foreign keys of subject_of_tenant() reference; also a tenant's subjects, in id order.
    __table_args__ = (sa.Index("uq_subjects_tenant_id_id", "tenant_id", "id", unique=True),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.key", max_length=64)
    # Standing states that override consents (later: "restricted", "erased").
    flags: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    # Set when this subject's device was linked to a known person: its history was copied there (devices.link).
    merged_into: uuid.UUID | None = Field(default=None, foreign_key="subjects.id")
    # The change feed's position of the last change of its flags (services/changes/feed.py).
    feed_position: int = Field(default=0, sa_type=sa.BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class SubjectIdentifier(SQLModel, table=True):
    """One identifier of a subject. `id_hash` is the blind index; `value_sealed` the encrypted value.

    When the subject is erased, its identifiers stay as blind indexes only (`value_sealed` empty, `erased_at` set):
    a check by one answers `erased`, and a decision captured before `erased_at` is refused for good. A decision
    given after it (the person signs up again) moves the identifier to a new subject, `erased_at` kept."""

    __tablename__ = "subject_identifiers"
    __table_args__ = (subject_of_tenant(),)

    tenant_id: str = Field(primary_key=True, max_length=64)
    id_hash: str = Field(primary_key=True, max_length=64)
    subject_id: uuid.UUID = Field(index=True)
    type: str = Field(max_length=16)
    value_sealed: str = Field(sa_type=sa.Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    erased_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class IdentifierOut(SQLModel):
    type: str
    value: str


class SubjectOut(SQLModel):
    subject_id: uuid.UUID
    identifiers: list[IdentifierOut]
    created_at: datetime
    flags: list[str]
    merged_into: uuid.UUID | None = None
