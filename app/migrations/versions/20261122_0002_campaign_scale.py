"""campaign scale: change feed, suppressions, import digests

Revision ID: 20261122_0002
Revises: 20261122_0001
Create Date: 2026-11-22 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import app.models.base

revision: str = "20261122_0002"
down_revision: str | None = "20261122_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("consent_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("feed_position", sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("consent_state", schema=None) as batch_op:
        batch_op.alter_column("feed_position", server_default=None)

    op.create_table(
        "consent_changes",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("captured_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(["subject_id"], ["subjects.id"], name=op.f("fk_consent_changes_subject_id_subjects")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.key"], name=op.f("fk_consent_changes_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_consent_changes")),
    )
    with op.batch_alter_table("consent_changes", schema=None) as batch_op:
        batch_op.create_index("ix_consent_changes_feed", ["tenant_id", "position", "seq"], unique=False)
    # The feed starts with the states that stand already: a follower from the beginning ends at the current state.
    op.execute(
        "INSERT INTO consent_changes (tenant_id, position, subject_id, purpose, channel, status, captured_at, event_id)"
        " SELECT tenant_id, 0, subject_id, purpose, channel, status, captured_at, event_id FROM consent_state"
        " ORDER BY tenant_id, subject_id, purpose, channel"
    )

    op.create_table(
        "suppressions",
        sa.Column("tenant_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("id_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("value_sealed", sa.Text(), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("created_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.key"], name=op.f("fk_suppressions_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("tenant_id", "id_hash", "channel", name=op.f("pk_suppressions")),
    )
    op.create_table(
        "consent_imports",
        sa.Column("tenant_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("record_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("imported_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.key"], name=op.f("fk_consent_imports_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("tenant_id", "record_hash", name=op.f("pk_consent_imports")),
    )


def downgrade() -> None:
    op.drop_table("consent_imports")
    op.drop_table("suppressions")
    with op.batch_alter_table("consent_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_consent_changes_feed")
    op.drop_table("consent_changes")
    with op.batch_alter_table("consent_state", schema=None) as batch_op:
        batch_op.drop_column("feed_position")
