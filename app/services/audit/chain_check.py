"""Checking one subject's hash chain: a pure function, so that it is tested row by row and shared by backends.

The chain the service wrote is found by walking back from the head `ledger_chains` holds, following each
event's `prev_event_id`. Then:
- an event on that walk whose bytes do not give its hash, or whose hash is not what its successor (or the
  head) recorded, was *changed*;
- an event the walk needs but the table lacks was *deleted* (its successor names it);
- a row of the table the walk never reaches, or one without chain fields, was *inserted*;
- events of the walk whose ledger order (`seq`) disagrees with their chain order were *reordered*; so were
  two events that verify again once their timestamps are exchanged back;
- the chain up to a signed checkpoint's head that no longer ends in the hash the checkpoint signed was
  *rewritten* (changed and every later hash recomputed, which only a signature outside the database reveals).
"""

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from app.models.audit import Problem
from app.services.ledger import GENESIS, event_hash

Row = Mapping[str, Any]
# Broken events of one chain tried in pairs for exchanged timestamps (beyond, they are reported as changed).
_MAX_PAIRED = 50


@dataclass(frozen=True, slots=True)
class Head:
    length: int
    event_id: UUID | None
    hash: str | None


@dataclass(frozen=True, slots=True)
class Finding:
    event_id: UUID | None
    problem: Problem
    detail: str


def check(events: Sequence[Row], head: Head | None, checkpoint: Head | None = None) -> list[Finding]:
    """Every problem of one subject's chain: `events` are all its rows (any order), `head` its ledger_chains row,
    `checkpoint` its head in the signed checkpoint compared against (None: not in one)."""
    if _intact(events, head, checkpoint):
        return []
    findings: dict[object, Finding] = {}

    def report(event_id: UUID | None, problem: Problem, detail: str) -> None:
        # One finding per event; every missing event whose id is unknown counts on its own.
        findings.setdefault(event_id if event_id is not None else object(), Finding(event_id, problem, detail))

    chained = [e for e in events if e["chain_index"] is not None and e["hash"] and e["prev_hash"]]
    for event in events:
        if not (event["chain_index"] is not None and event["hash"] and event["prev_hash"]):
            report(event["event_id"], "inserted", "the row has no place in the subject's hash chain")
    by_id = {e["event_id"]: e for e in chained}
    intact = {e["event_id"]: event_hash(e) == e["hash"] for e in chained}
    headless = None
    if head is None or head.event_id is None:
        # No head (the row is gone): start from the event the chain itself puts last.
        headless = max(chained, key=lambda e: e["chain_index"], default=None)
        head = Head(headless["chain_index"], headless["event_id"], headless["hash"]) if headless else Head(0, None, None)

    walk = _walk(head, by_id, intact, report)
    on_walk = {e["event_id"] for e in walk}
    for event in chained:
        if event["event_id"] not in on_walk:
            report(event["event_id"], "inserted", "the row is not on the subject's hash chain")
    _exchanged_timestamps(walk, intact, report)
    for event in walk:
        if not intact[event["event_id"]]:
            report(event["event_id"], "changed", "the event's fields no longer give its hash")
    _order(walk, report)
    if checkpoint is not None:
        _against_checkpoint(walk, checkpoint, report)
    if headless is not None:
        report(headless["event_id"], "rewritten", "the chain's head row is missing: events after this one may be gone")
    return list(findings.values())


def _intact(events: Sequence[Row], head: Head | None, checkpoint: Head | None) -> bool:
    """The common case, checked in one pass: events in seq order form the chain exactly, ending at the head (and
    passing through the checkpoint's). Anything else gets the full analysis, which names what is wrong."""
    if head is None or len(events) != head.length or not events:
        return not events and head is None and checkpoint is None
    prev_event_id, prev_hash, seq = None, GENESIS, -1
    for index, event in enumerate(events, start=1):
        if (
            event["seq"] <= seq or event["chain_index"] != index or event["prev_event_id"] != prev_event_id
            or event["prev_hash"] != prev_hash or event_hash(event) != event["hash"]
        ):
            return False
        prev_event_id, prev_hash, seq = event["event_id"], event["hash"], event["seq"]
        if checkpoint is not None and index == checkpoint.length and (
            event["event_id"] != checkpoint.event_id or event["hash"] != checkpoint.hash
        ):
            return False
    return (
        prev_event_id == head.event_id and prev_hash == head.hash
        and (checkpoint is None or checkpoint.length <= head.length)
    )


def _walk(head: Head, by_id: dict, intact: dict, report) -> list[Row]:
    """The chain as written, oldest first, reporting missing events and broken links on the way."""
    by_index: dict[int, list[Row]] = {}
    for event in by_id.values():
        by_index.setdefault(event["chain_index"], []).append(event)
    walk: list[Row] = []
    seen: set = set()
    first_found = False
    # `wanted`: the event expected at position `index` (None: whichever claims the position).
    wanted, expected_hash, index = head.event_id, head.hash, head.length
    while index > 0:
        event = by_id.get(wanted) if wanted is not None else None
        if event is not None and event["event_id"] in seen:
            event = None
        if event is None:
            claimants = [] if wanted is not None else [e for e in by_index.get(index, ()) if e["event_id"] not in seen]
            if not claimants:
                # Named by its successor (or the head) when that is known; else only its position is.
                report(wanted, "deleted", f"event {index} of the subject's chain is missing")
                wanted, expected_hash, index = None, None, index - 1
                continue
            event = min(claimants, key=lambda e: not intact[e["event_id"]])
        if expected_hash is not None and event["hash"] != expected_hash:
            report(event["event_id"], "changed", "its hash is not the one the next event (or the head) recorded")
        walk.append(event)
        seen.add(event["event_id"])
        first_found = index == 1
        # A changed event's own link is not trusted: the event claiming the position before it is taken instead.
        if intact[event["event_id"]]:
            wanted, expected_hash = event["prev_event_id"], event["prev_hash"]
        else:
            wanted, expected_hash = None, None
        index -= 1
    if first_found:
        first = walk[-1]
        if intact[first["event_id"]] and (first["prev_event_id"] is not None or first["prev_hash"] != GENESIS):
            report(first["event_id"], "changed", "the first event does not start the chain")
    walk.reverse()
    return walk


def _order(walk: list[Row], report) -> None:
    """Events whose ledger position (seq) disagrees with their chain position.

    Two readings of one disorder: the events whose rank differs (exactly the two of a swap), or the events off
    the longest run in order (exactly the one moved far away). The much shorter one is reported.
    """
    by_seq = sorted(walk, key=lambda e: e["seq"])
    misplaced = [c for c, s in zip(walk, by_seq, strict=True) if c["event_id"] != s["event_id"]]
    if not misplaced:
        return
    in_order = _longest_increasing([e["seq"] for e in walk])
    off_run = [e for i, e in enumerate(walk) if i not in in_order]
    for event in off_run if 2 * len(off_run) < len(misplaced) else misplaced:
        report(event["event_id"], "reordered", f"its ledger position (seq) disagrees with chain position {event['chain_index']}")


def _longest_increasing(values: list[int]) -> set[int]:
    """Indexes of a longest strictly increasing subsequence (patience sorting, O(n log n))."""
    tails: list[int] = []  # tails[k]: index of the smallest tail of an increasing run of length k + 1
    tail_values: list[int] = []
    before: list[int | None] = [None] * len(values)
    for i, value in enumerate(values):
        k = bisect.bisect_left(tail_values, value)
        before[i] = tails[k - 1] if k else None
        if k == len(tails):
            tails.append(i)
            tail_values.append(value)
        else:
            tails[k], tail_values[k] = i, value
    chosen: set[int] = set()
    at = tails[-1] if tails else None
    while at is not None:
        chosen.add(at)
        at = before[at]
    return chosen


def _exchanged_timestamps(walk: list[Row], intact: dict, report) -> None:
    """Two changed events that verify once a timestamp is exchanged back were reordered, not rewritten."""
    broken = [e for e in walk if not intact[e["event_id"]]]
    if len(broken) > _MAX_PAIRED:
        return  # pairing is quadratic: wholesale damage is reported as changed
    for i, first in enumerate(broken):
        for second in broken[i + 1 :]:
            for field in ("captured_at", "recorded_at"):
                if (
                    event_hash({**first, field: second[field]}) == first["hash"]
                    and event_hash({**second, field: first[field]}) == second["hash"]
                ):
                    detail = f"its {field} was exchanged with that of event %s"
                    report(first["event_id"], "reordered", detail % second["event_id"])
                    report(second["event_id"], "reordered", detail % first["event_id"])


def _against_checkpoint(walk: list[Row], checkpoint: Head, report) -> None:
    at = next((e for e in walk if e["event_id"] == checkpoint.event_id), None)
    if at is None:
        report(checkpoint.event_id, "deleted", f"the signed checkpoint saw this event at position {checkpoint.length}")
    elif at["hash"] != checkpoint.hash:
        report(
            checkpoint.event_id, "rewritten",
            f"the first {checkpoint.length} events of the chain no longer end in the hash the signed checkpoint "
            "holds: one of them was changed, removed or added and the hashes after it recomputed",
        )
