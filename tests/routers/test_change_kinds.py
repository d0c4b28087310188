"""GET /v1/changes carries every kind of change a follower needs to answer checks as consentd does:
consent (with expires_at and the purpose version), suppression and subject."""

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from app.services import subjects
from tests.support.api import check, iso, record
from tests.support.feed import follow


def _answer(state: dict, subject_id: str, purpose: str, channel: str, at: datetime, purposes: dict) -> str:
    """What a follower answers from the feed alone (for consent purposes with channels)."""
    if state["flags"].get(subject_id) in ("erased", "restricted"):
        return state["flags"][subject_id]
    if channel in state["suppressed"].get(subject_id, set()):
        return "suppressed"
    change = state["consents"].get((subject_id, purpose, channel))
    if change is None:
        return "no_consent"
    if change["status"] == "withdrawn":
        return "withdrawn"
    if change["purpose_version"] < purposes[purpose]["consent_from_version"]:
        return "reconsent_required"
    if change["expires_at"] is not None and at >= datetime.fromisoformat(change["expires_at"]):
        return "expired"
    return "consent_granted"


def apply(changes: list[dict]) -> dict:
    state: dict = {"consents": {}, "suppressed": {}, "flags": {}}
    for change in changes:
        if change["kind"] == "consent":
            state["consents"][change["subject_id"], change["purpose"], change["channel"]] = change
        elif change["kind"] == "suppression" and change["subject_id"] is not None:
            held = state["suppressed"].setdefault(change["subject_id"], set())
            if change["status"] == "suppressed":
                held.update(change["channels"])
            else:
                held.difference_update(change["channels"])
        elif change["kind"] == "subject":
            state["flags"][change["subject_id"]] = None if change["status"] == "unrestricted" else change["status"]
    return state


async def test_a_follower_answers_as_consentd_does(backend, client, tenant):
    old = datetime.now(UTC) - timedelta(days=400)
    people = {
        "fresh": await record(client, {"email": "fresh@example.com"}, ("marketing", "email", "granted")),
        "stale": await record(client, {"email": "stale@example.com"}, ("marketing", "email", "granted"), captured_at=iso(old)),
        "tps": await record(client, {"phone": "07911 123456"}, ("marketing", "phone", "granted")),
        "held": await record(client, {"email": "held@example.com"}, ("marketing", "email", "granted")),
    }
    suppressed = await client.put(
        "/v1/suppressions",
        json={"entries": [{"phone": "07911 123456"}, {"email": "never-seen@example.com"}], "channels": ["phone", "email"], "reason": "tps"},
    )
    assert suppressed.status_code == 200, suppressed.text
    async with backend.database.transaction() as session:
        held = uuid.UUID(people["held"]["subject_id"])
        assert await subjects.set_flag(session, tenant=tenant, subject_id=held, flag="restricted", on=True)
        assert not await subjects.set_flag(session, tenant=tenant, subject_id=held, flag="restricted", on=True)

    changes, _ = await follow(client, limit=2, until=lambda c: len(c) >= 7)
    assert [c["kind"] for c in changes] == ["consent"] * 4 + ["suppression"] * 2 + ["subject"]
    stale = next(c for c in changes if c["subject_id"] == people["stale"]["subject_id"])
    assert stale["expires_at"] == iso(old + timedelta(days=365))
    unknown = next(c for c in changes if c["kind"] == "suppression" and c["subject_id"] is None)
    assert (unknown["identifier_type"], unknown["channels"], unknown["status"], unknown["reason"]) == (
        "email", ["email", "phone"], "suppressed", "tps",
    )
    assert "never-seen" not in str(changes)  # the identifier itself is never in the feed

    purposes = {p["key"]: p for p in (await client.get("/v1/purposes")).json()["purposes"]}
    state, now = apply(changes), datetime.now(UTC)
    for name, email, channel in (("fresh", "fresh@example.com", "email"), ("stale", "stale@example.com", "email"),
                                 ("held", "held@example.com", "email"), ("tps", None, "phone")):
        ref = {"email": email} if email else {"phone": "07911 123456"}
        expected = (await check(client, ref, "marketing", channel))["reason"]
        assert _answer(state, people[name]["subject_id"], "marketing", channel, now, purposes) == expected, name

    # Releasing and lifting come through too.
    await client.post("/v1/suppressions/remove", json={"entries": [{"phone": "07911 123456"}], "channels": ["phone"]})
    async with backend.database.transaction() as session:
        await subjects.set_flag(session, tenant=tenant, subject_id=uuid.UUID(people["held"]["subject_id"]), flag="restricted", on=False)
    later, _ = await follow(client, changes[-1]["cursor"], until=lambda c: len(c) >= 2)
    assert [(c["kind"], c["status"]) for c in later] == [("suppression", "released"), ("subject", "unrestricted")]
    state = apply(changes + later)
    assert _answer(state, people["tps"]["subject_id"], "marketing", "phone", now, purposes) == "consent_granted"
    assert (await check(client, {"phone": "07911 123456"}, "marketing", "phone"))["reason"] == "consent_granted"


async def test_concurrent_suppress_and_release_end_where_the_list_does(pg_backend, client):
    """Writers racing on one identifier: a follower applying the feed in order ends at the list's own state."""
    await record(client, {"email": "race@example.com"}, ("marketing", "email", "granted"))
    transport = httpx.ASGITransport(app=pg_backend.app)
    rng = random.Random(7)

    async def writer(n: int) -> None:
        async with httpx.AsyncClient(transport=transport, base_url="http://c", headers=client.headers) as http:
            for _ in range(8):
                body = {"entries": [{"email": "race@example.com"}], "channels": ["email"], "reason": "bounce"}
                path = "/v1/suppressions" if rng.random() < 0.5 else "/v1/suppressions/remove"
                response = await (http.put(path, json=body) if path == "/v1/suppressions" else http.post(path, json=body))
                assert response.status_code == 200, response.text

    await asyncio.gather(*(writer(n) for n in range(6)))
    final = await client.put("/v1/suppressions", json={"entries": [{"email": "x@example.com"}], "channels": ["sms"]})
    assert final.status_code == 200
    changes, _ = await follow(client, limit=50, until=lambda c: any(x["kind"] == "suppression" and x["subject_id"] is None for x in c))
    sid = changes[0]["subject_id"]
    state = apply(changes)
    listed = (await client.get("/v1/suppressions", params={"channel": "email"})).json()["entries"]
    assert ("email" in state["suppressed"].get(sid, set())) == any(e.get("email") == "race@example.com" for e in listed)
    assert (await check(client, {"email": "race@example.com"}, "marketing", "email"))["reason"] == (
        "suppressed" if listed else "consent_granted"
    )
