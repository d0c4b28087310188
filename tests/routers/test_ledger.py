"""GET /v1/subjects/{id}/consents (now and as_of) and /history (cursor paging)."""

import json
import random
import uuid
from datetime import UTC, datetime, timedelta

from app.services.kit.cursors import pack
from tests.conftest import assert_problem, bearer
from tests.support.api import iso, record


async def test_as_of_answers_for_past_instants(client):
    subject = {"email": "asof@example.com"}
    first = await record(client, subject, ("marketing", "email", "granted"), captured_at="2026-01-10T00:00:00Z")
    sid = first["subject_id"]
    await record(client, subject, ("marketing", "email", "withdrawn"), captured_at="2026-03-10T00:00:00Z")

    async def standing(as_of: str | None) -> list[tuple]:
        params = {"as_of": as_of} if as_of else {}
        body = (await client.get(f"/v1/subjects/{sid}/consents", params=params)).json()
        return [(c["status"], c["effective"]) for c in body["consents"]]

    assert await standing("2026-01-01T00:00:00Z") == []
    assert await standing("2026-02-01T00:00:00Z") == [("granted", True)]
    assert await standing("2026-04-01T00:00:00+01:00") == [("withdrawn", True)]
    assert await standing(None) == [("withdrawn", True)]
    # A late-arriving decision about February changes what was true in February, not what is true now.
    await record(client, subject, ("marketing", "email", "withdrawn"), captured_at="2026-02-01T00:00:00Z")
    assert await standing("2026-02-15T00:00:00Z") == [("withdrawn", True)]
    assert await standing(None) == [("withdrawn", True)]


async def test_known_at_answers_what_the_ledger_said_then(client):
    """A late decision about February, recorded today: as of February it counts; known at yesterday it did not."""
    subject = {"email": "knownat@example.com"}
    sid = (await record(client, subject, ("marketing", "email", "granted"), captured_at="2026-01-10T00:00:00Z"))["subject_id"]
    before_late = (await client.get(f"/v1/subjects/{sid}/history")).json()["events"][0]["recorded_at"]
    late = await record(client, subject, ("marketing", "email", "withdrawn"), captured_at="2026-02-01T00:00:00Z")
    recorded = late["events"][0]["recorded_at"]

    async def standing(**params: str) -> tuple:
        body = (await client.get(f"/v1/subjects/{sid}/consents", params=params)).json()
        return body["as_of"], body["known_at"], [c["status"] for c in body["consents"]]

    feb = "2026-02-15T00:00:00Z"
    assert (await standing(as_of=feb))[2] == ["withdrawn"]
    assert (await standing(as_of=feb, known_at=before_late))[2] == ["granted"]
    assert (await standing(as_of=feb, known_at=recorded))[2] == ["withdrawn"]
    # known_at alone: what the ledger said at that moment about that moment.
    as_of, known_at, statuses = await standing(known_at=before_late)
    assert as_of == known_at == before_late and statuses == ["granted"]
    assert_problem(await client.get(f"/v1/subjects/{sid}/consents", params={"known_at": "today"}), 422)


async def test_expiry_is_computed_at_read_time(client):
    captured = datetime.now(UTC) - timedelta(days=366)
    sid = (await record(client, {"email": "exp@example.com"}, ("marketing", "sms", "granted"), captured_at=iso(captured)))["subject_id"]
    now = (await client.get(f"/v1/subjects/{sid}/consents")).json()["consents"][0]
    assert (now["status"], now["effective"], now["expires_at"]) == ("granted", False, iso(captured + timedelta(days=365)))
    then = (await client.get(f"/v1/subjects/{sid}/consents", params={"as_of": iso(captured + timedelta(days=1))})).json()
    assert then["consents"][0]["effective"] is True


async def test_projection_agrees_with_replaying_events(client):
    """Random decisions posted in random order: the state equals the ordering rule applied to the history."""
    rng = random.Random(7)
    subject = {"external_id": "replay"}
    base = datetime(2026, 6, 1, tzinfo=UTC)
    channels = ["email", "sms", "phone", "post"]
    sid = None
    for _ in range(30):
        at = base + timedelta(hours=rng.randrange(0, 48))  # repeats: ties happen
        body = await record(client, subject, ("marketing", rng.choice(channels), rng.choice(["granted", "withdrawn"])),
                            captured_at=iso(at))
        sid = body["subject_id"]
    history = (await client.get(f"/v1/subjects/{sid}/history", params={"limit": 1000})).json()["events"]
    expected = {}
    for event in history:  # oldest first by captured_at, ties in recording order: the last one stands
        expected[event["channel"]] = event["event_id"]
    now = (await client.get(f"/v1/subjects/{sid}/consents")).json()["consents"]
    replayed = (await client.get(f"/v1/subjects/{sid}/consents", params={"as_of": "2030-01-01T00:00:00Z"})).json()["consents"]
    assert {c["channel"]: c["event_id"] for c in now} == expected
    assert {c["channel"]: c["event_id"] for c in replayed} == expected


async def test_history_pages_with_a_cursor(client):
    subject = {"email": "pages@example.com"}
    sid = None
    for day in (5, 1, 3, 2, 4):
        sid = (await record(client, subject, ("marketing", "email", "granted"), ("profiling", None, "granted"),
                            captured_at=f"2026-05-0{day}T00:00:00Z"))["subject_id"]
    seen, cursor = [], None
    while True:
        params = {"limit": 3, "purpose": "marketing"} | ({"cursor": cursor} if cursor else {})
        page = (await client.get(f"/v1/subjects/{sid}/history", params=params)).json()
        seen += page["events"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [e["captured_at"][:10] for e in seen] == [f"2026-05-0{d}" for d in range(1, 6)]
    assert {e["purpose"] for e in seen} == {"marketing"}
    everything = (await client.get(f"/v1/subjects/{sid}/history", params={"limit": 1000})).json()
    assert len(everything["events"]) == 10 and everything["next_cursor"] is None


async def test_bad_reads(client):
    sid = (await record(client, {"email": "br@example.com"}, ("marketing", "email", "granted")))["subject_id"]

    def cursor(position: list) -> str:
        return pack(json.dumps(position).encode())

    forged = [cursor(p) for p in (["0001-01-01T00:00:00+01:00", 1], ["9999-12-31T23:59:59-01:00", 1],
                                  ["2026-01-01T00:00:00Z", 10**30], ["2026-01-01T00:00:00Z", -1],
                                  ["2026-01-01T00:00:00Z", 1e300], ["2026-01-01T00:00:00", 1], [1, 2, 3])]
    for params in ({"limit": 0}, {"limit": 1001}, {"limit": "many"}, {"cursor": "%%%"}, {"cursor": "bm90LWpzb24"},
                   {"purpose": "Not A Key"}, *({"cursor": c} for c in forged)):
        assert_problem(await client.get(f"/v1/subjects/{sid}/history", params=params), 422)
    for as_of in ("yesterday", "2026-01-01T00:00:00", "0001-01-01T00:00:00Z"):
        assert_problem(await client.get(f"/v1/subjects/{sid}/consents", params={"as_of": as_of}), 422)
    assert_problem(await client.get(f"/v1/subjects/{uuid.uuid4()}/consents"), 404)
    assert_problem(await client.get(f"/v1/subjects/{uuid.uuid4()}/history"), 404)


async def test_scopes_and_tenancy(client, anonymous, token, other_tenant):
    sid = (await record(client, {"email": "rt@example.com"}, ("marketing", "email", "granted")))["subject_id"]
    for path in (f"/v1/subjects/{sid}/consents", f"/v1/subjects/{sid}/history"):
        assert_problem(await anonymous.get(path), 401)
        assert_problem(await anonymous.get(path, headers=bearer(token("consents:write", "checks:read"))), 403)
        assert (await anonymous.get(path, headers=bearer(token("consents:read")))).status_code == 200
        assert_problem(await anonymous.get(path, headers=bearer(token("consents:read", tenant_key=other_tenant))), 404)
