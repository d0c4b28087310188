"""webhooks: endpoints, the outbox of events the change feed does not hold, the enqueue cursors, deliveries; the
scheduled work's marks on requests (an erasure waiting on holds, the due-soon notice sent)

Revision ID: 20261204_0010
Revises: 20261204_0009
Create Date: 2026-12-04 19:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models.base

revision: str = "20261204_0010"
down_revision: str | None = "20261204_0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = app.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.String(length=200), nullable=True),
        sa.Column("secret_sealed", sa.Text(), nullable=False),
        sa.Column("previous_secret_sealed", sa.Text(), nullable=True),
        sa.Column("previous_until", _TS, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.key"], name=op.f("fk_webhooks_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
        sa.UniqueConstraint("tenant_id", "name", name="uq_webhooks_tenant_name"),
    )
    op.create_table(
        "outbox_events",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("webhook_id", sa.Uuid(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.key"], name=op.f("fk_outbox_events_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_outbox_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_events_event_id")),
    )
    op.create_index("ix_outbox_events_tenant", "outbox_events", ["tenant_id", "seq"], unique=False)
    op.create_table(
        "webhook_cursors",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("feed_cursor", sa.String(length=64), nullable=True),
        sa.Column("outbox_seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.key"], name=op.f("fk_webhook_cursors_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_webhook_cursors")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("webhook_id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("next_attempt_at", _TS, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("delivered_at", _TS, nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.key"], name=op.f("fk_webhook_deliveries_tenant_id_tenants")),
        sa.ForeignKeyConstraint(["webhook_id"], ["webhooks.id"], name=op.f("fk_webhook_deliveries_webhook_id_webhooks")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("webhook_id", "message_id", name="uq_webhook_deliveries_message"),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"], unique=False)
    op.create_index("ix_webhook_deliveries_webhook", "webhook_deliveries", ["webhook_id", "created_at", "id"], unique=False)
    with op.batch_alter_table("data_requests") as batch_op:
        batch_op.add_column(sa.Column("waiting_on_holds", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("due_soon_sent_at", _TS, nullable=True))
    # Erasures completed in part before this revision (their outcome says pending) wait on their holds too.
    requests = sa.table("data_requests", sa.column("id", sa.Uuid()), sa.column("type", sa.String()),
                        sa.column("status", sa.String()), sa.column("outcome", sa.JSON()), sa.column("waiting_on_holds", sa.Boolean()))
    bind = op.get_bind()
    rows = bind.execute(sa.select(requests.c.id, requests.c.outcome).where(requests.c.type == "erasure", requests.c.status == "completed"))
    waiting = [{"at_id": request_id} for request_id, outcome in rows if (outcome or {}).get("pending")]
    if waiting:
        bind.execute(requests.update().where(requests.c.id == sa.bindparam("at_id")).values(waiting_on_holds=True), waiting)


def downgrade() -> None:
    with op.batch_alter_table("data_requests") as batch_op:
        batch_op.drop_column("due_soon_sent_at")
        batch_op.drop_column("waiting_on_holds")
    op.drop_index("ix_webhook_deliveries_webhook", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_cursors")
    op.drop_index("ix_outbox_events_tenant", table_name="outbox_events")
    op.drop_table("outbox_events")
    op.drop_table("webhooks")
