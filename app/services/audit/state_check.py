"""Checking one subject's consent states against its events: pure functions, tested row by row, shared by backends.

`consent_state` is what checks read, so a row edited behind the service's back changes their answers without
touching any hash. The state of a (purpose, channel) is the subject's event with the latest `captured_at`
(equal times: the higher `seq`), exactly as consents.append moves it; every column a check or a read depends on
must be that event's. A row that disagrees, a row the events do not give, and a missing row the events do give
are each a `state_mismatch`. Details name columns and the (purpose, channel), never a value.
"""

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Final

from app.services.audit.chain_check import Finding

Row = Mapping[str, Any]
PROBLEM: Final = "state_mismatch"
# consent_state column -> the event column it copies (the key columns and tenant are compared apart).
COPIED = (
    ("status", "status"), ("captured_at", "captured_at"), ("recorded_at", "recorded_at"), ("event_id", "event_id"),
    ("event_seq", "seq"), ("purpose_version", "purpose_version"), ("policy_version", "policy_version"),
)
# The same, for a state row joined with the event it names (columns prefixed `e_`: verification's incremental query).
JOINED = tuple((column, f"e_{source}") for column, source in COPIED)
KEY = ("tenant_id", "subject_id", "purpose", "channel")


def standing(events: Iterable[Row]) -> dict[tuple[str, str], Row]:
    """The event that stands for each (purpose, channel) of one subject's events (any order)."""
    best: dict[tuple[str, str], Row] = {}
    for event in events:
        key = (event["purpose"], event["channel"])
        held = best.get(key)
        if held is None or event["captured_at"] > held["captured_at"] or (
            event["captured_at"] == held["captured_at"] and event["seq"] > held["seq"]
        ):
            best[key] = event
    return best


def differences(state: Row, event: Row, columns: Sequence[tuple[str, str]] = COPIED) -> list[str]:
    """The state columns whose value is not the event's (`columns`: pairs of state and event column names)."""
    return [column for column, source in columns if state[column] != event[source]]


def check(events: Sequence[Row], states: Sequence[Row], explained: Collection = ()) -> list[Finding]:
    """Every state row of one subject that its events do not give, and every state they give that is missing.

    `explained`: event ids the chain check reported (changed, deleted, inserted, ...); a state whose own or
    expected event is one of them disagrees because of that finding, which is reported already.
    """
    if not events and not states:
        return []
    expected = standing(events)
    findings = []
    for state in states:
        key = (state["purpose"], state["channel"])
        event = expected.pop(key, None)
        if explained and (state["event_id"] in explained or (event is not None and event["event_id"] in explained)):
            continue
        if event is None:
            findings.append(Finding(state["event_id"], PROBLEM, f"a consent state for {describe(key)}, for which the subject has no event"))
        elif wrong := differences(state, event):
            findings.append(Finding(state["event_id"], PROBLEM, _disagrees(key, wrong)))
    for key, event in expected.items():
        if event["event_id"] not in explained:
            # A check would answer no_consent where the events say otherwise.
            findings.append(Finding(event["event_id"], PROBLEM, f"no consent state for {describe(key)}, which the subject's events give"))
    return findings


def against_own_event(state: Row, newer: bool) -> Finding | None:
    """A state row compared with the event it names (its `e_` columns, null when that event is missing, which the
    caller reports as deleted); `newer`: a later event of the same subject, purpose and channel exists.

    What incremental verification can say without reading the chain: the row copies the event it names, that
    event is of the row's own subject, purpose and channel, and no later one of them stands instead.
    """
    if state["e_event_id"] is None:
        return None
    key = (state["purpose"], state["channel"])
    if any(state[column] != state[f"e_{column}"] for column in KEY):
        return Finding(
            state["event_id"], PROBLEM, f"the consent state for {describe(key)} stands on an event of another subject, purpose or channel"
        )
    if wrong := differences(state, state, JOINED):
        return Finding(state["event_id"], PROBLEM, _disagrees(key, wrong))
    if newer:
        return Finding(state["event_id"], PROBLEM, f"the consent state for {describe(key)} stands on an event a later one replaced")
    return None


def describe(key: tuple[str, str]) -> str:
    purpose, channel = key
    # A purpose without channels stores "" (models/consents.py NO_CHANNEL).
    return f"purpose {purpose!r}, channel {channel!r}" if channel else f"purpose {purpose!r} (no channel)"


def _disagrees(key: tuple[str, str], columns: list[str]) -> str:
    return f"the consent state for {describe(key)} disagrees with the events in: {', '.join(columns)}"
