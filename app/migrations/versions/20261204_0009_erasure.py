"""erasure: the ledger's hash commits to evidence by its digest (v1 chains re-hashed as v2), erased evidence and identifiers, verification links

Revision ID: 20261204_0009
Revises: 20261204_0008
Create Date: 2026-12-04 19:00:00

Also: a completion now logs each subject flag it sets on the request's log, and verification replays those
entries; a subject restricted before this revision gets its entry here (_log_standing_restrictions).

An erasure destroys the evidence of the person's events, so the chain must not need those bytes: format
`consentd-event-v2` hashes the evidence's SHA-256 where v1 hashed the evidence itself. Every chain is re-hashed
here, event by event in chain order. An event that did not verify under v1 (altered behind the service's back)
keeps its stored hash and link, so that it still fails under v2: re-hashing never launders a change. Checkpoints
signed before this revision signed v1 hashes; they are marked `consentd-event-v1` (take a new one after upgrading).
"""

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op
from sqlalchemy.types import TypeEngine

import app.models.base

revision: str = "20261204_0009"
down_revision: str | None = "20261204_0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_GENESIS = "0" * 64
_PAGE = 10_000


# The canonical forms as of this revision, frozen here (services/ledger/chains.py may change later).
def _timestamp(value: datetime | str) -> str:
    if isinstance(value, str):
        return value
    if value.utcoffset():
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")[:-6] + "Z"


def _fields(event: dict) -> list[Any]:
    prev_event_id = event["prev_event_id"]
    return [
        event["tenant_id"], str(event["subject_id"]), event["chain_index"],
        None if prev_event_id is None else str(prev_event_id), event["prev_hash"], str(event["event_id"]),
        event["purpose"], event["purpose_version"], event["channel"] or None,
        event["status"], _timestamp(event["captured_at"]), _timestamp(event["recorded_at"]), event["source"],
        event["method"], event["policy_version"], event["collection_point"], event["actor"],
    ]


def _evidence(event: dict) -> Any:
    evidence = event["evidence"]
    return orjson.loads(evidence) if isinstance(evidence, str) else evidence


def _v1_hash(event: dict) -> str:
    canonical = orjson.dumps(["consentd-event-v1", *_fields(event), _evidence(event)], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def _v2_hash(event: dict) -> str:
    evidence = _evidence(event)
    digest = None if evidence is None else hashlib.sha256(orjson.dumps(evidence, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return hashlib.sha256(orjson.dumps(["consentd-event-v2", *_fields(event), digest])).hexdigest()


_EVENT_COLUMNS: list[tuple[str, TypeEngine[Any]]] = [
        ("seq", sa.BigInteger()), ("event_id", sa.Uuid()), ("tenant_id", sa.String()), ("subject_id", sa.Uuid()),
        ("purpose", sa.String()), ("purpose_version", sa.Integer()), ("channel", sa.String()), ("status", sa.String()),
        ("captured_at", app.models.base.UTCDateTime()), ("recorded_at", app.models.base.UTCDateTime()),
        ("source", sa.String()), ("method", sa.String()), ("policy_version", sa.String()),
        ("collection_point", sa.String()), ("actor", sa.String()), ("evidence", sa.JSON()), ("chain_index", sa.Integer()),
        ("prev_event_id", sa.Uuid()), ("prev_hash", sa.String()), ("hash", sa.String()),
]
_EVENTS = sa.table("consent_events", *(sa.column(name, kind) for name, kind in _EVENT_COLUMNS))
_CHAINS = sa.table("ledger_chains", sa.column("subject_id", sa.Uuid()), sa.column("head_event_id", sa.Uuid()),
                   sa.column("head_hash", sa.String()))


def upgrade() -> None:
    with op.batch_alter_table("consent_events") as batch_op:
        batch_op.add_column(sa.Column("evidence_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("evidence_erased_at", app.models.base.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table("ledger_chains") as batch_op:
        batch_op.add_column(sa.Column("erased_at", app.models.base.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table("subject_identifiers") as batch_op:
        batch_op.add_column(sa.Column("erased_at", app.models.base.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table("audit_checkpoints") as batch_op:
        batch_op.add_column(
            sa.Column("event_format", sa.String(length=32), nullable=False, server_default="consentd-event-v1")
        )
    with op.batch_alter_table("audit_checkpoints") as batch_op:
        batch_op.alter_column("event_format", server_default=None)
    with op.batch_alter_table("data_requests") as batch_op:
        batch_op.add_column(sa.Column("link_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("link_expires_at", app.models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_data_requests_link", ["link_hash"], unique=True)
    _rehash(old=_v1_hash, new=_v2_hash)
    _log_standing_restrictions()


_REQUESTS = sa.table(
    "data_requests", sa.column("id", sa.Uuid()), sa.column("tenant_id", sa.String()), sa.column("subject_id", sa.Uuid()),
    sa.column("type", sa.String()), sa.column("status", sa.String()), sa.column("details", sa.JSON()),
    sa.column("received_at", app.models.base.UTCDateTime()), sa.column("log_length", sa.Integer()),
    sa.column("log_head_hash", sa.String()),
)
_LOG = sa.table(
    "data_request_log", sa.column("tenant_id", sa.String()), sa.column("request_id", sa.Uuid()),
    sa.column("chain_index", sa.Integer()), sa.column("at", app.models.base.UTCDateTime()), sa.column("action", sa.String()),
    sa.column("actor", sa.String()), sa.column("note", sa.Text()), sa.column("prev_hash", sa.String()),
    sa.column("hash", sa.String()),
)
_SUBJECTS = sa.table("subjects", sa.column("id", sa.Uuid()), sa.column("tenant_id", sa.String()), sa.column("flags", sa.JSON()))


def _log_standing_restrictions() -> None:
    """From this revision a completion logs each flag it sets (action `restricted`, note `subject <id>`), and audit
    verification replays those entries to check the flags checks read. A subject restricted before it gets that
    entry on the restriction request that restricted it (the latest completed one)."""
    bind = op.get_bind()
    subjects = _SUBJECTS.c
    restricted = bind.execute(
        sa.select(subjects.id, subjects.tenant_id).where(sa.cast(subjects.flags, sa.Text).like('%"restricted"%'))
    ).all()
    at = datetime.now(UTC)
    for subject_id, tenant in restricted:
        requests = _REQUESTS.c
        rows = bind.execute(
            sa.select(requests.id, requests.details, requests.log_length, requests.log_head_hash)
            .where(requests.tenant_id == tenant, requests.subject_id == subject_id, requests.type == "restriction",
                   requests.status == "completed")
            .order_by(requests.received_at.desc())
        ).all()
        chosen = next((row for row in rows if not (row.details or {}).get("lift")), None)
        if chosen is None:
            continue  # restricted by no request: verification reports it, as it should
        index, prev = chosen.log_length + 1, chosen.log_head_hash or _GENESIS
        entry = {
            "tenant_id": tenant, "request_id": chosen.id, "chain_index": index, "at": at, "action": "restricted",
            "actor": "migration 20261204_0009", "note": f"subject {subject_id}", "prev_hash": prev,
        }
        canonical = ["consentd-request-log-v1", tenant, str(chosen.id), index, prev, _timestamp(at), "restricted",
                     entry["actor"], entry["note"]]
        entry["hash"] = hashlib.sha256(orjson.dumps(canonical)).hexdigest()
        bind.execute(_LOG.insert().values(**entry))
        bind.execute(
            _REQUESTS.update().where(_REQUESTS.c.id == chosen.id).values(log_length=index, log_head_hash=entry["hash"])
        )


def downgrade() -> None:
    erased = op.get_bind().execute(sa.text("SELECT count(*) FROM consent_events WHERE evidence_erased_at IS NOT NULL"))
    if erased.scalar_one():
        raise RuntimeError("events whose evidence was erased cannot be hashed as consentd-event-v1: not downgrading")
    _rehash(old=_v2_hash, new=_v1_hash)
    with op.batch_alter_table("data_requests") as batch_op:
        batch_op.drop_index("ix_data_requests_link")
        batch_op.drop_column("link_expires_at")
        batch_op.drop_column("link_hash")
    with op.batch_alter_table("audit_checkpoints") as batch_op:
        batch_op.drop_column("event_format")
    with op.batch_alter_table("subject_identifiers") as batch_op:
        batch_op.drop_column("erased_at")
    with op.batch_alter_table("ledger_chains") as batch_op:
        batch_op.drop_column("erased_at")
    with op.batch_alter_table("consent_events") as batch_op:
        batch_op.drop_column("evidence_erased_at")
        batch_op.drop_column("evidence_sha256")


def _rehash(*, old: Callable[[dict], str], new: Callable[[dict], str]) -> None:
    """Every chain re-hashed from `old` to `new`, subject by subject in chain order, in pages.

    An event re-hashed is one whose stored hash is `old` of its fields and whose link names the stored hash of the
    event before it; any other keeps its stored hash and link (it fails `new` as it failed `old`), and so does
    whatever links to it. A head follows its chain's last event when it named that event and its stored hash.
    """
    bind = op.get_bind()
    events = _EVENTS.c
    subject: Any = None
    stored_prev = new_prev = _GENESIS
    last: dict[str, Any] = {}
    heads: list[dict[str, Any]] = []
    after = None
    while True:
        query = (
            sa.select(_EVENTS).where(events.chain_index.is_not(None), events.hash.is_not(None))
            .order_by(events.subject_id, events.chain_index, events.seq).limit(_PAGE)
        )
        if after is not None:
            query = query.where(sa.tuple_(events.subject_id, events.chain_index, events.seq) > sa.tuple_(*after))
        rows = bind.execute(query).mappings().all()
        if not rows:
            break
        updates = []
        for row in rows:
            event = dict(row)
            if event["subject_id"] != subject:
                if last:
                    heads.append(last)
                subject, stored_prev, new_prev = event["subject_id"], _GENESIS, _GENESIS
            stored = event["hash"]
            if event["prev_hash"] == stored_prev and old(event) == stored:
                event["prev_hash"] = new_prev
                event["hash"] = new(event)
                updates.append({"at_seq": event["seq"], "new_prev": event["prev_hash"], "new_hash": event["hash"]})
            stored_prev, new_prev = stored, event["hash"]
            last = {"sid": subject, "eid": event["event_id"], "was": stored, "now": event["hash"]}
        if updates:
            bind.execute(
                _EVENTS.update().where(events.seq == sa.bindparam("at_seq"))
                .values(prev_hash=sa.bindparam("new_prev"), hash=sa.bindparam("new_hash")),
                updates,
            )
        after = (rows[-1]["subject_id"], rows[-1]["chain_index"], rows[-1]["seq"])
        _move_heads(bind, heads)
    if last:
        heads.append(last)
    _move_heads(bind, heads)


def _move_heads(bind: sa.Connection, heads: list[dict[str, Any]]) -> None:
    """Each chain's head, where it named the chain's last event and that event's stored hash, names its new hash."""
    changed = [head for head in heads if head["was"] != head["now"]]
    heads.clear()
    if not changed:
        return
    chains = _CHAINS.c
    bind.execute(
        _CHAINS.update()
        .where(chains.subject_id == sa.bindparam("sid"), chains.head_event_id == sa.bindparam("eid"),
               chains.head_hash == sa.bindparam("was"))
        .values(head_hash=sa.bindparam("now")),
        changed,
    )
