"""Purposes: what a subject consents to (or may object to), per tenant, versioned on every change."""

from datetime import datetime
from typing import Annotated, Literal

import sqlalchemy as sa
from pydantic import field_validator
from sqlmodel import Field, SQLModel

from app.models.base import UTCDateTime, utcnow
from app.models.common import Channel, Days, Schema, text

LegalBasis = Literal["consent", "legitimate_interest", "contract", "legal_obligation"]
Category = Literal["marketing", "cookies", "sharing", "profiling", "research", "sensitive", "other"]


class Purpose(SQLModel, table=True):
    __tablename__ = "purposes"

    tenant_id: str = Field(primary_key=True, foreign_key="tenants.key", max_length=64)
    key: str = Field(primary_key=True, max_length=64)
    version: int = Field(default=1)
    # Grants given under an earlier version stop counting (checks answer reconsent_required): raised by a change of
    # third_party or a PUT with "reconsent": true (services/purposes/store.py).
    consent_from_version: int = Field(default=1)
    title: str = Field(max_length=200)
    description: str = Field(default="", sa_type=sa.Text)
    legal_basis: str = Field(max_length=32)
    category: str = Field(max_length=32)
    channels: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    third_party: str | None = Field(default=None, max_length=200)
    lifespan_days: int | None = None
    reconfirm_days: int | None = None
    double_opt_in: bool = Field(default=False)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class PurposeVersion(SQLModel, table=True):
    """Every version a purpose has had, kept so that an old consent can be read against its own text."""

    __tablename__ = "purpose_versions"

    tenant_id: str = Field(primary_key=True, foreign_key="tenants.key", max_length=64)
    key: str = Field(primary_key=True, max_length=64)
    version: int = Field(primary_key=True)
    definition: dict = Field(sa_type=sa.JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class PurposeIn(Schema):
    title: Annotated[str, text(200, 1)]
    description: Annotated[str, text(4000)] = ""
    legal_basis: LegalBasis
    category: Category
    channels: list[Channel] = []  # noqa: RUF012 - pydantic copies a field's default for each instance
    third_party: Annotated[str, text(200, 1)] | None = None
    lifespan_days: Days | None = None
    reconfirm_days: Days | None = None
    double_opt_in: bool = False

    @field_validator("channels")
    @classmethod
    def _distinct(cls, channels: list[str]) -> list[str]:
        if len(set(channels)) != len(channels):
            raise ValueError("channels must not repeat")
        return channels


class PurposeWrite(PurposeIn):
    """The PUT body: a definition, and whether this change is material (everyone must consent again)."""

    reconsent: bool = False


class PurposeOut(PurposeIn):
    key: str
    version: int
    consent_from_version: int
    created_at: datetime
    updated_at: datetime


class PurposeList(Schema):
    purposes: list[PurposeOut]
