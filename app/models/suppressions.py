"""Suppression lists: identifiers that must not be contacted on some channels, whatever their consents."""

from datetime import datetime
from typing import Annotated, Literal

import sqlalchemy as sa
from pydantic import ConfigDict, model_validator
from pydantic import Field as Bounds
from sqlmodel import Field, SQLModel

from app.models.base import BigSerial, UTCDateTime, utcnow
from app.models.common import Channel, Schema, text

Reason = Literal["tps", "bounce", "complaint", "manual"]


class Suppression(SQLModel, table=True):
    """One identifier suppressed on one channel. `id_hash` is the same blind index subject identifiers use."""

    __tablename__ = "suppressions"

    tenant_id: str = Field(primary_key=True, foreign_key="tenants.key", max_length=64)
    id_hash: str = Field(primary_key=True, max_length=64)
    channel: str = Field(primary_key=True, max_length=16)
    type: str = Field(max_length=16)
    value_sealed: str = Field(sa_type=sa.Text)
    reason: str = Field(max_length=16)
    actor: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class SuppressionEvent(SQLModel, table=True):
    """One change the API made to a tenant's suppression list. Never updated, never deleted (the database refuses).

    The tenant's changes form one hash chain (services/suppressions/log.py): replaying them gives the list exactly,
    so a suppression added, changed or removed behind the service's back is found (`suppression_mismatch`).
    """

    __tablename__ = "suppression_events"
    __table_args__ = (sa.Index("ix_suppression_events_chain", "tenant_id", "chain_index"),)

    seq: int | None = Field(default=None, primary_key=True, sa_type=BigSerial)
    tenant_id: str = Field(foreign_key="tenants.key", max_length=64)
    chain_index: int
    action: str = Field(max_length=8)  # "add" (or a new reason) | "remove"
    id_hash: str = Field(max_length=64)
    channel: str = Field(max_length=16)
    type: str = Field(max_length=16)
    reason: str | None = Field(default=None, max_length=16)
    actor: str = Field(max_length=200)
    at: datetime = Field(sa_type=UTCDateTime)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class SuppressionChain(SQLModel, table=True):
    """The head of a tenant's suppression chain; its row orders the tenant's suppression writers."""

    __tablename__ = "suppression_chains"

    tenant_id: str = Field(primary_key=True, foreign_key="tenants.key", max_length=64)
    length: int = 0
    head_hash: str | None = Field(default=None, max_length=64)
    # The change feed's position of the last suppression change (services/changes/feed.py).
    feed_position: int = Field(default=0, sa_type=sa.BigInteger)


class SuppressionEntry(Schema):
    """An identifier to suppress: exactly one of email, phone, external_id."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1, "maxProperties": 1})

    email: Annotated[str, text(320, 1)] | None = None
    phone: Annotated[str, text(64, 1)] | None = None
    external_id: Annotated[str, text(255, 1)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "SuppressionEntry":
        if len(self.items()) != 1:
            raise ValueError("give exactly one of email, phone, external_id")
        return self

    def items(self) -> list[tuple[str, str]]:
        return [(kind, value) for kind in ("email", "phone", "external_id") if (value := getattr(self, kind)) is not None]


class SuppressionsIn(Schema):
    entries: list[SuppressionEntry] = Bounds(min_length=1, max_length=10_000)
    channels: list[Channel] = Bounds(min_length=1, max_length=4)
    reason: Reason = "manual"


class SuppressionsRemoveIn(Schema):
    entries: list[SuppressionEntry] = Bounds(min_length=1, max_length=10_000)
    channels: list[Channel] = Bounds(min_length=1, max_length=4)
    # Accepted so that the same body can be sent to PUT and to remove; it is not used to choose what goes.
    reason: Reason | None = None


class SuppressionsResult(SQLModel):
    entries: int
    channels: list[str]
    changed: int


class SuppressionOut(SQLModel):
    """A suppressed identifier as PUT takes it: exactly one of email, phone, external_id (normalised); or, for a
    person erased since, none of them and `erased` true (the identifier is kept as a blind index only, still
    suppressed)."""

    email: str | None = None
    phone: str | None = None
    external_id: str | None = None
    channels: list[str]
    reason: str
    created_at: datetime
    erased: bool | None = None


class SuppressionPage(SQLModel):
    entries: list[SuppressionOut]
    next_cursor: str | None
