"""consent exact: purposes' consent_from_version and double_opt_in; every kind of change in the feed; the events'
recorded_at index; an append-only, chained log of suppression changes (existing suppressions are logged as added)

Revision ID: 20261202_0005
Revises: 20261122_0004
Create Date: 2026-12-02 19:00:00
"""

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import orjson
import sqlalchemy as sa
from alembic import op

import app.models.base

revision: str = "20261202_0005"
down_revision: str | None = "20261122_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PAGE = 10_000


def upgrade() -> None:
    with op.batch_alter_table("purposes") as batch:
        batch.add_column(sa.Column("consent_from_version", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("double_opt_in", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("subjects") as batch:
        batch.add_column(sa.Column("feed_position", sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("consent_events") as batch:
        batch.create_index("ix_consent_events_recorded", ["tenant_id", "recorded_at", "seq"], unique=False)
    with op.batch_alter_table("consent_changes") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="consent"))
        batch.add_column(sa.Column("expires_at", app.models.base.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("purpose_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("channels", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("reason", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("identifier_type", sa.String(length=16), nullable=True))
        for name, kind in (("subject_id", sa.Uuid()), ("purpose", sa.String(64)), ("channel", sa.String(16)), ("event_id", sa.Uuid())):
            batch.alter_column(name, existing_type=kind, nullable=True)
    _describe_existing_changes()

    op.create_table(
        "suppression_events",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("chain_index", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.key"], name=op.f("fk_suppression_events_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_suppression_events")),
    )
    op.create_index("ix_suppression_events_chain", "suppression_events", ["tenant_id", "chain_index"], unique=False)
    op.create_table(
        "suppression_chains",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=True),
        sa.Column("feed_position", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.key"], name=op.f("fk_suppression_chains_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_suppression_chains")),
    )
    _log_existing_suppressions()
    _append_only("suppression_events")


def downgrade() -> None:
    op.drop_table("suppression_chains")
    op.drop_index("ix_suppression_events_chain", table_name="suppression_events")
    op.drop_table("suppression_events")
    op.execute("DELETE FROM consent_changes WHERE kind <> 'consent'")
    with op.batch_alter_table("consent_changes") as batch:
        for name, kind in (("subject_id", sa.Uuid()), ("purpose", sa.String(64)), ("channel", sa.String(16)), ("event_id", sa.Uuid())):
            batch.alter_column(name, existing_type=kind, nullable=False)
        for name in ("identifier_type", "reason", "channels", "purpose_version", "expires_at", "kind"):
            batch.drop_column(name)
    with op.batch_alter_table("consent_events") as batch:
        batch.drop_index("ix_consent_events_recorded")
    with op.batch_alter_table("subjects") as batch:
        batch.drop_column("feed_position")
    with op.batch_alter_table("purposes") as batch:
        batch.drop_column("double_opt_in")
        batch.drop_column("consent_from_version")


# The columns as of this revision (not the live models, which may have grown since).
_CHANGES = sa.table(
    "consent_changes", sa.column("seq", sa.BigInteger()), sa.column("expires_at", app.models.base.UTCDateTime()),
    sa.column("purpose_version", sa.Integer()), sa.column("event_id", sa.Uuid()), sa.column("tenant_id", sa.String()),
    sa.column("purpose", sa.String()), sa.column("status", sa.String()), sa.column("captured_at", app.models.base.UTCDateTime()),
)
_EVENTS = sa.table("consent_events", sa.column("event_id", sa.Uuid()), sa.column("purpose_version", sa.Integer()))
_PURPOSES = sa.table(
    "purposes", sa.column("tenant_id", sa.String()), sa.column("key", sa.String()), sa.column("lifespan_days", sa.Integer())
)


def _describe_existing_changes() -> None:
    """Give the changes already in the feed the purpose version and expiry a follower now reads from it."""
    bind = op.get_bind()
    c, e, p = _CHANGES, _EVENTS, _PURPOSES
    after = 0
    while True:
        rows = bind.execute(
            sa.select(c.c.seq, c.c.status, c.c.captured_at, e.c.purpose_version, p.c.lifespan_days)
            .select_from(c.outerjoin(e, e.c.event_id == c.c.event_id).outerjoin(p, sa.and_(p.c.tenant_id == c.c.tenant_id, p.c.key == c.c.purpose)))
            .where(c.c.seq > after).order_by(c.c.seq).limit(_PAGE)
        ).all()
        if not rows:
            return
        updates = [
            {
                "s": seq, "v": version,
                "x": captured_at + timedelta(days=days) if status == "granted" and days is not None else None,
            }
            for seq, status, captured_at, version, days in rows
        ]
        bind.execute(
            sa.update(c).where(c.c.seq == sa.bindparam("s")).values(purpose_version=sa.bindparam("v"), expires_at=sa.bindparam("x")),
            updates,
        )
        after = rows[-1][0]


# Frozen here: the suppression log's canonical form as of this revision (services/suppression_log.py).
_FORMAT = "consentd-suppression-v1"
_GENESIS = "0" * 64
_SUPPRESSIONS = sa.table(
    "suppressions", *(sa.column(name) for name in ("tenant_id", "id_hash", "channel", "type", "reason", "actor")),
    sa.column("created_at", app.models.base.UTCDateTime()),
)
_LOG = sa.table(
    "suppression_events", *(sa.column(name) for name in (
        "tenant_id", "chain_index", "action", "id_hash", "channel", "type", "reason", "actor", "prev_hash", "hash",
    )), sa.column("at", app.models.base.UTCDateTime()),
)
_HEADS = sa.table("suppression_chains", *(sa.column(name) for name in ("tenant_id", "length", "head_hash", "feed_position")))


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def _hash(row: dict) -> str:
    values = [
        _FORMAT, row["tenant_id"], row["chain_index"], row["prev_hash"], row["action"], row["id_hash"], row["channel"],
        row["type"], row["reason"], row["actor"], _timestamp(row["at"]),
    ]
    return hashlib.sha256(orjson.dumps(values)).hexdigest()


def _log_existing_suppressions() -> None:
    """Log every suppression standing now as added when it was created, tenant by tenant, in a stable order."""
    bind = op.get_bind()
    s = _SUPPRESSIONS
    heads: dict[str, tuple[int, str]] = {}
    after: tuple = ("", "", "")
    while True:
        rows = bind.execute(
            sa.select(s).where(sa.tuple_(s.c.tenant_id, s.c.id_hash, s.c.channel) > sa.tuple_(*after))
            .order_by(s.c.tenant_id, s.c.id_hash, s.c.channel).limit(_PAGE)
        ).mappings().all()
        if not rows:
            break
        logged = []
        for row in rows:
            length, head = heads.get(row["tenant_id"], (0, _GENESIS))
            event = {
                "tenant_id": row["tenant_id"], "chain_index": length + 1, "action": "add", "id_hash": row["id_hash"],
                "channel": row["channel"], "type": row["type"], "reason": row["reason"], "actor": row["actor"],
                "at": row["created_at"], "prev_hash": head,
            }
            event["hash"] = _hash(event)
            heads[row["tenant_id"]] = (length + 1, event["hash"])
            logged.append(event)
        bind.execute(sa.insert(_LOG), logged)
        after = (rows[-1]["tenant_id"], rows[-1]["id_hash"], rows[-1]["channel"])
    if heads:
        bind.execute(
            sa.insert(_HEADS),
            [{"tenant_id": t, "length": n, "head_hash": h, "feed_position": 0} for t, (n, h) in heads.items()],
        )


def _append_only(table: str) -> None:
    """The database itself refuses to change or remove a logged change, whoever asks."""
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
