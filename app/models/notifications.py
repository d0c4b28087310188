"""Webhooks: endpoints, the outbox of events that are not in the change feed, and deliveries (services/notifications/)."""

import uuid
from datetime import datetime
from typing import Annotated, Literal

import sqlalchemy as sa
from pydantic import Field as Bounds
from pydantic import field_validator
from sqlmodel import Field, SQLModel

from app.models.base import BigSerial, UTCDateTime, new_id, utcnow
from app.models.common import Schema, text

# The event types an endpoint can subscribe to (CONTRACT, Notifications). consent.changed, suppression.changed,
# subject.restricted and subject.erased are read from the change feed; the others enter the outbox.
EventType = Literal[
    "consent.changed", "suppression.changed", "subject.restricted", "subject.erased", "subject.rectified",
    "request.created", "request.due_soon", "request.completed", "policy.published", "webhook.test",
]
DeliveryStatus = Literal["pending", "delivered", "failed", "dead"]
WebhookName = Annotated[str, Bounds(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]


class Webhook(SQLModel, table=True):
    """An endpoint of a tenant: where to send which events, and the secrets that sign them (sealed)."""

    __tablename__ = "webhooks"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "name", name="uq_webhooks_tenant_name"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.key", max_length=64)
    name: str = Field(max_length=64)
    url: str = Field(sa_type=sa.Text)
    events: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    enabled: bool = True
    # Why consentd disabled it (a 410 Gone from the receiver), if it did.
    disabled_reason: str | None = Field(default=None, max_length=200)
    secret_sealed: str = Field(sa_type=sa.Text)
    # After a rotation, the previous secret signs too, until `previous_until`.
    previous_secret_sealed: str | None = Field(default=None, sa_type=sa.Text)
    previous_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class OutboxEvent(SQLModel, table=True):
    """An event that is not a change of the feed (a rectification, a request created or completed, a test), written
    in the transaction that causes it: none for a write that rolled back, none lost for one that committed."""

    __tablename__ = "outbox_events"
    __table_args__ = (sa.Index("ix_outbox_events_tenant", "tenant_id", "seq"),)

    seq: int | None = Field(default=None, primary_key=True, sa_type=BigSerial)
    tenant_id: str = Field(foreign_key="tenants.key", max_length=64)
    event_id: uuid.UUID = Field(default_factory=new_id, unique=True)
    type: str = Field(max_length=32)
    # Only for webhook.test: the one endpoint it is for (others are for every subscriber).
    webhook_id: uuid.UUID | None = None
    data: dict = Field(default_factory=dict, sa_type=sa.JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class WebhookCursor(SQLModel, table=True):
    """How far a tenant's events have been turned into deliveries: the change feed's cursor and the outbox's seq.
    Its row is locked while they are, so one process enqueues a tenant's events at a time."""

    __tablename__ = "webhook_cursors"

    tenant_id: str = Field(primary_key=True, foreign_key="tenants.key", max_length=64)
    feed_cursor: str | None = Field(default=None, max_length=64)
    outbox_seq: int = Field(default=0, sa_type=sa.BigInteger)


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint: its exact body, and how its delivery went."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # The dispatcher's queue: what is due, oldest first.
        sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        # An endpoint's deliveries, newest first (GET /v1/webhooks/{name}/deliveries).
        sa.Index("ix_webhook_deliveries_webhook", "webhook_id", "created_at", "id"),
        # An event is enqueued once per endpoint, whoever enqueues it.
        sa.UniqueConstraint("webhook_id", "message_id", name="uq_webhook_deliveries_message"),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.key", max_length=64)
    webhook_id: uuid.UUID = Field(foreign_key="webhooks.id")
    # The `webhook-id` header: the same on every attempt.
    message_id: str = Field(max_length=64)
    type: str = Field(max_length=32)
    body: str = Field(sa_type=sa.Text)
    status: str = Field(default="pending", max_length=16)
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=200)
    next_attempt_at: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class WebhookIn(Schema):
    url: Annotated[str, text(2000, 8)]
    events: Annotated[list[EventType], Bounds(min_length=1, max_length=20)]
    enabled: bool = True

    @field_validator("events")
    @classmethod
    def _distinct(cls, events: list[str]) -> list[str]:
        return sorted(set(events))


class WebhookOut(Schema):
    webhook_id: uuid.UUID
    name: str
    url: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime
    # Only in the answer to the PUT that creates the endpoint, and to a rotation: keep it, it is not shown again.
    secret: str | None = None


class WebhooksOut(Schema):
    webhooks: list[WebhookOut]


class DeliveryOut(Schema):
    delivery_id: uuid.UUID
    webhook_id: uuid.UUID
    message_id: str
    type: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None


class DeliveriesOut(Schema):
    deliveries: list[DeliveryOut]
    next_cursor: str | None
