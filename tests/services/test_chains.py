"""The canonical form an event's hash covers: fixed, because exports are checked against it outside consentd."""

import hashlib
import uuid
from datetime import UTC, datetime, timedelta, timezone

import asyncpg.pgproto.pgproto as pgproto
import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from app.models.base import new_id
from app.services.ledger.chains import (
    CANONICAL_FIELDS,
    EMPTY,
    FORMAT,
    GENESIS,
    canonical_bytes,
    canonical_values,
    event_hash,
    extend,
    timestamp,
)
from app.services.ledger.events import DECISION_FIELDS, EVENT_FIELDS, Draft, Event

EVENT = {
    "tenant_id": "acme", "subject_id": uuid.UUID("6f1c1c2e-0000-4000-8000-000000000001"), "chain_index": 2,
    "prev_event_id": uuid.UUID("6f1c1c2e-0000-4000-8000-0000000000aa"), "prev_hash": GENESIS.replace("0", "a"),
    "event_id": uuid.UUID("6f1c1c2e-0000-4000-8000-0000000000bb"), "purpose": "marketing", "purpose_version": 3,
    "channel": "email", "status": "granted", "captured_at": datetime(2026, 11, 21, 10, 0, tzinfo=UTC),
    "recorded_at": datetime(2026, 11, 21, 11, 0, 0, 123, tzinfo=timezone(timedelta(hours=1))), "source": "web",
    "method": "api", "policy_version": "2022-05", "collection_point": None, "actor": "crm",
    "evidence": {"z": 1, "a": "é"},
}


EVIDENCE_SHA256 = hashlib.sha256('{"a":"é","z":1}'.encode()).hexdigest()


def test_the_canonical_bytes_are_stable():
    assert canonical_bytes(EVENT) == (
        b'["consentd-event-v2","acme","6f1c1c2e-0000-4000-8000-000000000001",2,"6f1c1c2e-0000-4000-8000-0000000000aa",'
        b'"' + b"a" * 64 + b'","6f1c1c2e-0000-4000-8000-0000000000bb","marketing",3,"email","granted",'
        b'"2026-11-21T10:00:00.000000Z","2026-11-21T10:00:00.000123Z","web","api","2022-05",null,"crm",'
        b'"' + EVIDENCE_SHA256.encode() + b'"]'
    )
    assert event_hash(EVENT) == hashlib.sha256(canonical_bytes(EVENT)).hexdigest()
    without = canonical_bytes(EVENT)[: -len(EVIDENCE_SHA256) - 3] + b"null]"
    assert event_hash({**EVENT, "evidence": None}) == hashlib.sha256(without).hexdigest()


def test_an_erased_event_hashes_by_the_digest_it_kept():
    """Erasure destroys the evidence and keeps its digest: the hash is the same, and a digest that is not the
    evidence's (a forged one) breaks it."""
    erased = {**EVENT, "evidence": None, "evidence_sha256": EVIDENCE_SHA256, "evidence_erased_at": EVENT["recorded_at"]}
    assert event_hash(erased) == event_hash(EVENT)
    assert event_hash({**erased, "evidence_sha256": GENESIS}) != event_hash(EVENT)
    # Until it is erased, the evidence itself is hashed: a digest column filled in behind the service's back is ignored.
    assert event_hash({**EVENT, "evidence_sha256": GENESIS}) == event_hash(EVENT)
    assert event_hash({**EVENT, "evidence": {"z": 2, "a": "é"}, "evidence_sha256": EVIDENCE_SHA256}) != event_hash(EVENT)
    # Evidence put back on an erased event is hashed itself: forged evidence fails, the original does not.
    assert event_hash({**erased, "evidence": {"z": 2, "a": "é"}}) != event_hash(EVENT)
    assert event_hash({**erased, "evidence": EVENT["evidence"]}) == event_hash(EVENT)


def test_every_field_is_covered_in_order():
    values = dict(zip(CANONICAL_FIELDS, canonical_values(EVENT), strict=True))
    assert set(values) == set(CANONICAL_FIELDS) and values["actor"] == "crm" and values["evidence_sha256"] == EVIDENCE_SHA256
    # What the database may give back hashes the same: evidence as text, timestamps as the export writes them,
    # a purpose without channels as "" or null.
    stored = {**EVENT, "evidence": '{"z": 1,  "a": "é"}', "captured_at": "2026-11-21T10:00:00.000000Z"}
    assert event_hash(stored) == event_hash(EVENT)
    assert event_hash({**EVENT, "channel": ""}) == event_hash({**EVENT, "channel": None})
    assert orjson.loads(canonical_bytes(EVENT))[0] == FORMAT


def test_each_field_changes_the_hash():
    for field, other in [("status", "withdrawn"), ("chain_index", 3), ("prev_hash", GENESIS), ("evidence", None),
                         ("captured_at", datetime(2026, 11, 21, 10, 0, 0, 1, tzinfo=UTC)), ("actor", "crm2")]:
        assert event_hash({**EVENT, field: other}) != event_hash(EVENT), field


@given(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.timezones()))
@example(datetime(2026, 11, 21, 10, 0, tzinfo=UTC))
@example(datetime(1, 1, 1, tzinfo=UTC))
@example(datetime(9999, 12, 31, 22, 0, 0, 999_999, tzinfo=timezone(timedelta(hours=-1, seconds=-30))))
@example(datetime(999, 6, 1, 0, 0, 0, 1, tzinfo=timezone(timedelta(0))))
def test_a_timestamp_reads_as_isoformat_in_utc_would(value):
    """timestamp() writes with orjson; the canonical form was defined by isoformat, side by side here."""
    utc = value.astimezone(UTC) if value.utcoffset() else value
    assert timestamp(value) == utc.isoformat(timespec="microseconds")[:-6] + "Z"


def test_an_id_hashes_the_same_whatever_type_holds_it():
    """Python's UUID (orjson writes it), asyncpg's (read back from PostgreSQL) and text (from SQLite) alike."""
    ids = ("subject_id", "prev_event_id", "event_id")
    for kind in (lambda u: pgproto.UUID(u.bytes), str):
        assert canonical_bytes({**EVENT, **{name: kind(EVENT[name]) for name in ids}}) == canonical_bytes(EVENT)


def test_a_draft_becomes_an_event_with_its_decision_unchanged():
    assert Draft._fields == (*DECISION_FIELDS, "captured_at") and EVENT_FIELDS[: len(DECISION_FIELDS)] == DECISION_FIELDS
    draft = Draft(
        new_id(), "acme", EVENT["subject_id"], "marketing", 3, "email", "granted", "web", "api", "2022-05", None, "crm",
        {"a": 1}, None,
    )
    recorded = datetime(2026, 11, 21, 11, tzinfo=UTC)
    event = extend(EMPTY, draft, recorded_at=recorded)
    assert isinstance(event, Event) and event[: len(DECISION_FIELDS)] == draft[: len(DECISION_FIELDS)]
    assert (event.captured_at, event.recorded_at, event.chain_index, event.prev_event_id, event.prev_hash) == (
        recorded, recorded, 1, None, GENESIS,
    )
    assert event.hash == event_hash(event.row()) and "seq" not in event.row()
