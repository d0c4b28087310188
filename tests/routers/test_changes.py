"""GET /v1/changes: every change of consent state, in the order to apply it, from any cursor it handed out."""

import random
from datetime import UTC, datetime, timedelta

from app.services.kit.cursors import pack as b64
from tests.conftest import assert_problem, bearer
from tests.support.api import consent_body, iso, record
from tests.support.feed import feed_page, follow

BASE = datetime(2026, 10, 1, tzinfo=UTC)
FIELDS = ("event_id", "subject_id", "purpose", "channel", "status", "captured_at")


def at(minutes: int) -> str:
    return iso(BASE + timedelta(minutes=minutes))


def as_change(recorded: dict, index: int = 0) -> dict:
    """The change a recorded event should appear as in the feed."""
    event = recorded["events"][index]
    return {field: event[field] for field in FIELDS}


def without_cursor(changes: list[dict]) -> list[dict]:
    return [{field: change[field] for field in FIELDS} for change in changes]


async def test_an_empty_feed_hands_back_a_cursor(client):
    first = await feed_page(client, None, 10)
    assert first["changes"] == []
    again = await feed_page(client, first["next_cursor"], 10)
    assert again == {"changes": [], "next_cursor": first["next_cursor"]}


async def test_follow_the_feed_from_the_start(client):
    a1 = await record(client, {"email": "a@example.com"}, ("marketing", "email", "granted"), captured_at=at(0), policy_version="p1")
    a2 = await record(client, {"email": "a@example.com"}, ("profiling", None, "withdrawn"), captured_at=at(1))
    b1 = await record(client, {"phone": "07911 123459"}, ("marketing", "sms", "granted"), captured_at=at(5))
    a3 = await record(client, {"email": "a@example.com"}, ("marketing", "email", "withdrawn"), captured_at=at(10))
    expected = [as_change(r) for r in (a1, a2, b1, a3)]
    assert expected[1]["channel"] is None  # a channel-less purpose's change says so with null

    everything, end = await follow(client, limit=100, until=lambda changes: len(changes) >= 4)
    assert without_cursor(everything) == expected
    assert set(everything[0]) == {"cursor", "kind", "expires_at", "purpose_version", *FIELDS}
    assert {c["kind"] for c in everything} == {"consent"}
    assert everything[0]["captured_at"] == at(0)
    assert len({change["cursor"] for change in everything}) == 4
    # Any page size walks the same feed, and a cursor from the middle continues after that change.
    for limit in (1, 2, 3):
        paged, paged_end = await follow(client, limit=limit)
        assert paged == everything and paged_end == end, limit
    for index, change in enumerate(everything):
        rest, _ = await follow(client, change["cursor"], limit=2)
        assert rest == everything[index + 1 :]

    # Following on from the end: nothing, then exactly what was recorded since.
    assert (await feed_page(client, end, 10)) == {"changes": [], "next_cursor": end}
    b2 = await record(client, {"subject_id": b1["subject_id"]}, ("marketing", "post", "granted"), captured_at=at(20))
    more, _ = await follow(client, end, until=lambda changes: len(changes) >= 1)
    assert without_cursor(more) == [as_change(b2)]


async def test_one_request_many_decisions(client):
    recorded = await record(
        client, {"external_id": "M-1"},
        ("marketing", "email", "granted"), ("marketing", "sms", "withdrawn"), ("cookies_analytics", None, "granted"),
        captured_at=at(0),
    )
    changes, _ = await follow(client, until=lambda changes: len(changes) >= 3)
    # Their order among themselves is the feed's to choose; they are all there, once.
    assert sorted(without_cursor(changes), key=str) == sorted((as_change(recorded, i) for i in range(3)), key=str)


async def test_only_states_that_move_are_changes(client):
    subject = {"email": "late@example.com"}
    newer = await record(client, subject, ("marketing", "email", "granted"), captured_at=at(10))
    older = await record(client, subject, ("marketing", "email", "withdrawn"), captured_at=at(5))  # arrives late
    sid = newer["subject_id"]
    history = (await client.get(f"/v1/subjects/{sid}/history")).json()["events"]
    assert {e["event_id"] for e in history} == {newer["events"][0]["event_id"], older["events"][0]["event_id"]}
    tie = await record(client, subject, ("marketing", "email", "withdrawn"), captured_at=at(10))  # equal: later recorded wins
    other = await record(client, subject, ("marketing", "sms", "granted"), captured_at=at(1))

    changes, _ = await follow(client, until=lambda changes: len(changes) >= 3)
    assert without_cursor(changes) == [as_change(newer), as_change(tie), as_change(other)]
    state = (await client.get(f"/v1/subjects/{sid}/consents")).json()["consents"]
    assert {(c["purpose"], c["channel"]): c["event_id"] for c in state} == {
        ("marketing", "email"): tie["events"][0]["event_id"], ("marketing", "sms"): other["events"][0]["event_id"],
    }
    # Old news afterwards: still no change.
    _, end = await follow(client, limit=10)
    await record(client, subject, ("marketing", "email", "granted"), captured_at=at(2))
    await record(client, subject, ("marketing", "sms", "withdrawn"), captured_at=at(0))
    marker = await record(client, {"email": "marker@example.com"}, ("profiling", None, "granted"), captured_at=at(0))
    after, _ = await follow(client, end, until=lambda changes: len(changes) >= 1)
    assert without_cursor(after) == [as_change(marker)]  # recorded last, so the two before it are behind it


async def test_replaying_the_feed_ends_at_the_current_state(client):
    rng = random.Random(7)
    keys = [("marketing", channel) for channel in ("email", "sms", "phone", "post")]
    keys += [("profiling", None), ("cookies_analytics", None)]
    subjects = [{"email": f"replay{i}@example.com"} for i in range(3)]
    ids: dict[str, str] = {}
    # The ordering rule, kept locally: the newest captured_at stands; on a tie, the later recorded.
    standing: dict[tuple, dict] = {}
    moves: dict[tuple, list[str]] = {}
    for _ in range(60):
        who = rng.randrange(len(subjects))
        decisions = [
            (purpose, channel, rng.choice(["granted", "withdrawn"])) for purpose, channel in rng.sample(keys, rng.randint(1, 3))
        ]
        ref = {"subject_id": ids[who]} if who in ids and rng.random() < 0.5 else subjects[who]
        recorded = await record(client, ref, *decisions, captured_at=at(rng.randrange(0, 40)))
        ids[who] = recorded["subject_id"]
        for event in recorded["events"]:
            key = (event["subject_id"], event["purpose"], event["channel"])
            if key not in standing or event["captured_at"] >= standing[key]["captured_at"]:
                standing[key] = event
                moves.setdefault(key, []).append(event["event_id"])
    expected_count = sum(len(m) for m in moves.values())
    assert expected_count < 60 * 2  # some decisions arrived late and moved nothing

    changes, _ = await follow(client, limit=7, until=lambda changes: len(changes) >= expected_count)
    assert len(changes) == expected_count
    assert len({c["cursor"] for c in changes}) == expected_count
    applied: dict[tuple, dict] = {}
    seen: dict[tuple, list[str]] = {}
    for change in changes:
        key = (change["subject_id"], change["purpose"], change["channel"])
        if key in applied:
            assert change["captured_at"] >= applied[key]["captured_at"]  # a state never moves back in time
        applied[key] = change
        seen.setdefault(key, []).append(change["event_id"])
    assert seen == moves  # each key's changes are exactly its state moves, in order
    assert {key: without_cursor([c])[0] for key, c in applied.items()} == {
        key: {field: event[field] for field in FIELDS} for key, event in standing.items()
    }
    for sid in ids.values():
        state = (await client.get(f"/v1/subjects/{sid}/consents")).json()["consents"]
        assert {(sid, c["purpose"], c["channel"]): (c["event_id"], c["status"]) for c in state} == {
            key: (c["event_id"], c["status"]) for key, c in applied.items() if key[0] == sid
        }




async def test_bad_cursor_or_limit_is_a_problem(client):
    await record(client, {"email": "c@example.com"}, ("marketing", "email", "granted"))
    bad = [
        {"after": "not a cursor!"},
        {"after": ""},
        {"after": "A" * 65},
        {"after": b64(b"1.2.3")},
        {"after": b64(b"one.2")},
        {"after": b64(b"12")},
        {"after": b64(b"-2.0")},
        {"after": b64(b"5.-1")},
        {"after": b64(f"{2**63}.0".encode())},
        {"after": b64(f"0.{2**63}".encode())},
        {"after": b64(b"1e3.0")},
        {"after": b64(b"\x00.\x00")},
        {"after": b64(b"\xff\xfe.1")},
        {"limit": 0},
        {"limit": -1},
        {"limit": 10_001},
        {"limit": "many"},
    ]
    for params in bad:
        response = await client.get("/v1/changes", params=params)
        problem = assert_problem(response, 422)
        assert problem["errors"] and all(e["loc"][0] == "query" for e in problem["errors"]), (params, problem)
    assert (await client.get("/v1/changes", params={"limit": 10_000})).status_code == 200


async def test_needs_consents_read(anonymous, token):
    assert_problem(await anonymous.get("/v1/changes"), 401)
    assert_problem(await anonymous.get("/v1/changes", headers=bearer("not-a-jwt")), 401)
    for scope in ("consents:write", "checks:read", "audit:read", "purposes:write"):
        assert_problem(await anonymous.get("/v1/changes", headers=bearer(token(scope))), 403)
    assert (await anonymous.get("/v1/changes", headers=bearer(token("consents:read")))).status_code == 200


async def test_another_tenant_sees_none_of_its_changes(client, anonymous, token, other_tenant):
    recorded = await record(client, {"email": "mine@example.com"}, ("marketing", "email", "granted"))
    ours, our_end = await follow(client, until=lambda changes: len(changes) >= 1)  # past the horizon: committed and visible
    assert without_cursor(ours) == [as_change(recorded)]
    theirs = bearer(token("consents:read", tenant_key=other_tenant))
    assert (await feed_page(anonymous, None, 100, headers=theirs))["changes"] == []
    # Our cursors are positions, not keys to our data: from one, they still see only their own changes.
    assert (await feed_page(anonymous, ours[0]["cursor"], 100, headers=theirs))["changes"] == []
    response = await anonymous.post(
        "/v1/consents", headers=bearer(token("consents:write", tenant_key=other_tenant)),
        json=consent_body({"email": "mine@example.com"}, ("marketing", "email", "withdrawn")),
    )
    assert response.status_code == 201
    their_changes, _ = await follow(anonymous, until=lambda changes: len(changes) >= 1, headers=theirs)
    assert [c["event_id"] for c in their_changes] == [response.json()["events"][0]["event_id"]]
    assert (await feed_page(client, our_end, 100))["changes"] == []
