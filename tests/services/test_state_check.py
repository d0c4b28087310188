"""state_check, row by row: which event stands for each (purpose, channel), and which state rows disagree."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.services.audit import state_check
from app.services.audit.state_check import COPIED, KEY, against_own_event, check, standing

SUBJECT = uuid.UUID("6f1c1c2e-0000-4000-8000-000000000001")
AT = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def event(seq: int, purpose: str = "marketing", channel: str = "email", status: str = "granted", hours: int = 0) -> dict:
    return {
        "seq": seq, "event_id": uuid.UUID(int=seq), "tenant_id": "acme", "subject_id": SUBJECT, "purpose": purpose,
        "channel": channel, "status": status, "captured_at": AT + timedelta(hours=hours),
        "recorded_at": AT + timedelta(days=1, seconds=seq), "purpose_version": 2, "policy_version": "2026-01",
    }


def state_of(e: dict, **changed) -> dict:
    """The consent_state row the service writes for event `e`, with `changed` columns edited."""
    row = {name: e[name] for name in KEY} | {column: e[source] for column, source in COPIED}
    return row | changed


def joined(row: dict, e: dict | None) -> dict:
    """A state row as incremental verification reads it: with the event it names (`e_` columns)."""
    names = (*KEY, *(source for _, source in COPIED))
    return row | {f"e_{name}": (e[name] if e is not None else None) for name in names}


def test_the_latest_captured_stands_whatever_the_order_and_ties_go_to_the_later_seq():
    old, late_arrival, newest = event(1, hours=5), event(2, hours=1), event(3, hours=5)
    other = event(4, channel="sms", status="withdrawn")
    assert standing([newest, old, late_arrival, other]) == {("marketing", "email"): newest, ("marketing", "sms"): other}
    # A decision about an earlier moment recorded later does not stand.
    assert standing([old, late_arrival]) == {("marketing", "email"): old}
    assert standing([]) == {}


def test_states_the_service_wrote_agree():
    events = [event(1, status="withdrawn", hours=3), event(2, hours=1), event(3, purpose="cookies_analytics", channel="")]
    assert check(events, [state_of(events[0]), state_of(events[2])]) == []
    assert check([], []) == []


@pytest.mark.parametrize(
    "edit, columns",
    [
        ({"status": "granted"}, "status"),
        ({"captured_at": AT + timedelta(hours=9)}, "captured_at"),
        ({"recorded_at": AT}, "recorded_at"),
        ({"purpose_version": 1}, "purpose_version"),
        ({"policy_version": None}, "policy_version"),
        ({"event_seq": 99}, "event_seq"),
    ],
)
def test_an_edited_column_is_named(edit, columns):
    withdrawn = event(1, status="withdrawn")
    (finding,) = check([withdrawn], [state_of(withdrawn, **edit)])
    assert (finding.event_id, finding.problem) == (withdrawn["event_id"], "state_mismatch")
    assert finding.detail.endswith(f"disagrees with the events in: {columns}")
    assert "purpose 'marketing', channel 'email'" in finding.detail


def test_a_state_pointed_at_an_older_event_of_its_key_is_named():
    granted, withdrawn = event(1, hours=0), event(2, status="withdrawn", hours=1)
    (finding,) = check([granted, withdrawn], [state_of(granted)])
    assert finding.event_id == granted["event_id"]
    assert finding.detail.endswith("in: status, captured_at, recorded_at, event_id, event_seq")


def test_a_state_pointed_at_another_keys_event_is_named():
    email, sms = event(1), event(2, channel="sms", status="withdrawn")
    (finding,) = check([email, sms], [state_of(email), state_of(email, channel="sms")])
    assert finding.event_id == email["event_id"] and "channel 'sms'" in finding.detail


def test_a_missing_state_is_named_by_the_event_that_should_stand():
    first, second = event(1), event(2, status="withdrawn", hours=1)
    (finding,) = check([first, second], [])
    assert (finding.event_id, finding.problem) == (second["event_id"], "state_mismatch")
    assert finding.detail == "no consent state for purpose 'marketing', channel 'email', which the subject's events give"


def test_a_state_without_events_is_named():
    """Inserted for a key the subject never decided on, or moved here from another subject."""
    elsewhere = event(7, purpose="cookies_analytics", channel="")
    (finding,) = check([event(1)], [state_of(event(1)), state_of(elsewhere)])
    assert finding.event_id == elsewhere["event_id"]
    assert finding.detail == "a consent state for purpose 'cookies_analytics' (no channel), for which the subject has no event"
    assert [f.event_id for f in check([], [state_of(elsewhere)])] == [elsewhere["event_id"]]


def test_a_disagreement_the_chain_check_explains_is_not_reported_twice():
    standing_event, deleted = event(1), event(2, hours=1)
    # The event the state names was deleted (the chain check said so): only that is reported.
    assert check([standing_event], [state_of(deleted)], explained={deleted["event_id"]}) == []
    # The event that should stand was inserted or changed: likewise.
    assert check([standing_event, deleted], [state_of(standing_event)], explained={deleted["event_id"]}) == []
    assert check([standing_event], [], explained={standing_event["event_id"]}) == []
    # Anything else still is.
    assert len(check([standing_event], [state_of(standing_event, status="withdrawn")], explained={uuid.uuid4()})) == 1


def test_a_state_agrees_with_its_own_event():
    withdrawn = event(1, status="withdrawn")
    assert against_own_event(joined(state_of(withdrawn), withdrawn), newer=False) is None


@pytest.mark.parametrize(
    "edit, words",
    [
        ({"status": "granted"}, "disagrees with the events in: status"),
        ({"captured_at": AT - timedelta(days=1), "status": "granted"}, "in: status, captured_at"),
        ({"subject_id": uuid.uuid4()}, "an event of another subject, purpose or channel"),
        ({"channel": "sms"}, "an event of another subject, purpose or channel"),
    ],
    ids=["status", "status-and-time", "moved-to-another-subject", "another-key"],
)
def test_a_state_that_does_not_copy_its_own_event_is_named(edit, words):
    withdrawn = event(1, status="withdrawn")
    finding = against_own_event(joined(state_of(withdrawn, **edit), withdrawn), newer=False)
    assert (finding.event_id, finding.problem) == (withdrawn["event_id"], "state_mismatch") and words in finding.detail


def test_a_state_replaced_by_a_later_event_is_named_and_a_missing_event_left_to_the_orphan_check():
    granted = event(1)
    finding = against_own_event(joined(state_of(granted), granted), newer=True)
    assert finding.event_id == granted["event_id"] and "a later one replaced" in finding.detail
    # The event it names is gone: verification reports that event as deleted instead.
    assert against_own_event(joined(state_of(granted), None), newer=False) is None


def test_details_name_columns_never_values():
    e = event(1, status="withdrawn")
    details = [f.detail for f in check([e], [state_of(e, status="granted", event_id=uuid.uuid4())])]
    assert details and not any(str(e["subject_id"]) in d or "granted" in d for d in details)
    assert state_check.describe(("cookies_analytics", "")) == "purpose 'cookies_analytics' (no channel)"
