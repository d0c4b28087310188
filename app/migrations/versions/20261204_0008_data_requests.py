"""data requests: data-subject requests on the statutory clock, each with an append-only, hash-chained log; legal holds

Revision ID: 20261204_0008
Revises: 20261204_0007
Create Date: 2026-12-04 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models.base

revision: str = "20261204_0008"
down_revision: str | None = "20261204_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LOG = "data_request_log"


def upgrade() -> None:
    op.create_table(
        "data_requests",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=True),
        sa.Column("id_type", sa.String(length=16), nullable=True),
        sa.Column("id_hash", sa.String(length=64), nullable=True),
        sa.Column("value_sealed", sa.Text(), nullable=True),
        sa.Column("received_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("received_via", sa.String(length=16), nullable=True),
        sa.Column("verified_method", sa.String(length=16), nullable=True),
        sa.Column("verified_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("clock_started_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("due_at", sa.Date(), nullable=True),
        sa.Column("extended_due_at", sa.Date(), nullable=True),
        sa.Column("due_sort", sa.Date(), nullable=False),
        sa.Column("paused_days", sa.Integer(), nullable=False),
        sa.Column("paused_on", sa.Date(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.Column("outcome", sa.JSON(), nullable=True),
        sa.Column("log_length", sa.Integer(), nullable=False),
        sa.Column("log_head_hash", sa.String(length=64), nullable=True),
        sa.Column("created_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.key"], name=op.f("fk_data_requests_tenant_id_tenants")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "subject_id"], ["subjects.tenant_id", "subjects.id"],
            name=op.f("fk_data_requests_tenant_id_subjects"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_requests")),
    )
    op.create_index("ix_data_requests_due", "data_requests", ["tenant_id", "due_sort", "id"], unique=False)
    op.create_table(
        _LOG,
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("chain_index", sa.Integer(), nullable=False),
        sa.Column("at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=24), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["request_id"], ["data_requests.id"], name=op.f("fk_data_request_log_request_id_data_requests")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.key"], name=op.f("fk_data_request_log_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_data_request_log")),
    )
    op.create_index("ix_data_request_log_request", _LOG, ["request_id", "chain_index"], unique=True)
    _append_only(_LOG)
    op.create_table(
        "legal_holds",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.String(length=24), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("until", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("placed_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("placed_by", sa.String(length=200), nullable=False),
        sa.Column("released_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("released_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.key"], name=op.f("fk_legal_holds_tenant_id_tenants")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "subject_id"], ["subjects.tenant_id", "subjects.id"], name=op.f("fk_legal_holds_tenant_id_subjects"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_legal_holds")),
    )
    op.create_index("ix_legal_holds_subject", "legal_holds", ["tenant_id", "subject_id", "placed_at"], unique=False)


def _append_only(table: str) -> None:
    """The database itself refuses to change or remove a logged action, whoever asks."""
    if op.get_bind().dialect.name == "postgresql":
        # consentd_append_only() was created with the access log (revision 0004).
        op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION consentd_append_only()")
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION consentd_append_only()")
        return
    for event in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        )


def downgrade() -> None:
    op.drop_index("ix_legal_holds_subject", table_name="legal_holds")
    op.drop_table("legal_holds")
    op.drop_index("ix_data_request_log_request", table_name=_LOG)
    op.drop_table(_LOG)
    op.drop_index("ix_data_requests_due", table_name="data_requests")
    op.drop_table("data_requests")
