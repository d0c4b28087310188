"""POST /v1/subjects/{subject_id}/identifiers: a device linked to a known person, histories merged."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import sqlalchemy as sa

from app.models import ConsentEvent
from tests.conftest import assert_problem, bearer
from tests.routers.test_public_banner import ALL_ON, SHOP, new_key, post_choices, standing
from tests.support.api import check, iso, record


def device() -> str:
    """A device id the site's backend names (the JWT API takes any; the banner's are consentd's own)."""
    return uuid.uuid4().hex


async def link(client, subject_id: str, device_id: str, status: int = 200) -> dict:
    response = await client.post(f"/v1/subjects/{subject_id}/identifiers", json={"device_id": device_id})
    assert response.status_code == status, response.text
    return response.json()


async def visitor_for(backend):
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=backend.app), base_url="http://consentd.test", headers={"Origin": SHOP}
    )


async def test_linking_merges_histories_newest_decision_stands(backend, tenant, client):
    key = await new_key(backend, tenant)
    now = datetime.now(UTC)
    person = await record(
        client, {"email": "jane@example.com"},
        ("cookies_analytics", None, "withdrawn"), ("cookies_advertising", None, "granted"),
        captured_at=iso(now - timedelta(days=2)),
    )
    async with await visitor_for(backend) as visitor:
        # On the device, later: analytics on. Then the person, later still, turns advertising off elsewhere.
        first = await post_choices(visitor, key, None, {"cookies_analytics": True, "cookies_advertising": True})
        device_id = first["device_id"]
        await record(client, {"email": "jane@example.com"}, ("cookies_advertising", None, "withdrawn"),
                     captured_at=iso(now + timedelta(minutes=1)))
        linked = await link(client, person["subject_id"], device_id)
        assert linked["subject_id"] == person["subject_id"] and linked["events_merged"] == 2
        merged_from = linked["merged_subject_id"]
        assert merged_from and merged_from != person["subject_id"]

        jane = {"email": "jane@example.com"}
        assert (await check(client, jane, "cookies_analytics"))["allowed"] is True  # the device's newer grant
        assert (await check(client, jane, "cookies_advertising"))["reason"] == "withdrawn"  # the person's newer no
        history = (await client.get(f"/v1/subjects/{person['subject_id']}/history")).json()["events"]
        assert len(history) == 5 and sum(e["source"] == "cookie_banner" for e in history) == 2
        # The banner on that device now reads the person's one history.
        state = await standing(visitor, key, device_id)
        assert state["choices"]["cookies_analytics"] is True and state["choices"]["cookies_advertising"] is False
        # A new choice on the device lands on the person.
        await post_choices(visitor, key, device_id, {"cookies_analytics": False})
        assert (await check(client, jane, "cookies_analytics"))["reason"] == "withdrawn"
    # The old device subject keeps its own history, untouched, and says where it went.
    old = (await client.get(f"/v1/subjects/{merged_from}")).json()
    assert old["merged_into"] == person["subject_id"] and old["identifiers"] == []
    assert len((await client.get(f"/v1/subjects/{merged_from}/history")).json()["events"]) == 2
    async with backend.database.transaction(read_only=True) as session:
        copies = (await session.execute(
            sa.select(ConsentEvent.method, ConsentEvent.evidence).where(
                ConsentEvent.tenant_id == tenant, ConsentEvent.method == "link")
        )).all()
    assert len(copies) == 2 and all(e["merged_from"]["subject_id"] == merged_from for _, e in copies)
    # Linking again is a no-op.
    assert await link(client, person["subject_id"], device_id) == {
        "subject_id": person["subject_id"], "merged_subject_id": None, "events_merged": 0,
    }


async def test_an_unknown_device_is_attached(backend, tenant, client):
    person = await record(client, {"external_id": "C-1"}, ("marketing", "email", "granted"))
    device_id = device()
    assert (await link(client, person["subject_id"], device_id))["merged_subject_id"] is None
    found = await client.post("/v1/subjects/lookup", json={"device_id": device_id})
    assert found.json()["subject_id"] == person["subject_id"]


async def test_a_device_of_another_known_person_is_a_conflict(client):
    device_id = device()
    ann = await record(client, {"email": "ann@example.com"}, ("marketing", "email", "granted"))
    bob = await record(client, {"email": "bob@example.com"}, ("marketing", "email", "granted"))
    await link(client, ann["subject_id"], device_id)
    assert_problem(await client.post(f"/v1/subjects/{bob['subject_id']}/identifiers", json={"device_id": device_id}), 409)
    found = await client.post("/v1/subjects/lookup", json={"device_id": device_id})
    assert found.json()["subject_id"] == ann["subject_id"]


async def test_bad_input_scopes_and_tenants(client, anonymous, token, other_tenant):
    person = await record(client, {"email": "kim@example.com"}, ("marketing", "email", "granted"))
    url = f"/v1/subjects/{person['subject_id']}/identifiers"
    for body in ({}, {"device_id": "short"}, {"device_id": device(), "email": "x@example.com"}, {"email": "x@example.com"}):
        assert_problem(await client.post(url, json=body), 422)
    assert_problem(await client.post("/v1/subjects/not-a-uuid/identifiers", json={"device_id": device()}), 422)
    assert_problem(await client.post(f"/v1/subjects/{uuid.uuid4()}/identifiers", json={"device_id": device()}), 404)
    assert_problem(await anonymous.post(url, json={"device_id": device()}), 401)
    assert_problem(await anonymous.post(url, json={"device_id": device()}, headers=bearer(token("consents:read"))), 403)
    other = bearer(token("admin", tenant_key=other_tenant))
    assert_problem(await anonymous.post(url, json={"device_id": device()}, headers=other), 404)
    subject = (await client.get(f"/v1/subjects/{person['subject_id']}")).json()
    assert [i["type"] for i in subject["identifiers"]] == ["email"]  # nothing attached by the failures


async def test_concurrent_banner_writes_and_link_lose_nothing(pg_backend, tenant, client):
    """A device's choices posted while it is being linked end up on the person, none lost."""
    key = await new_key(pg_backend, tenant)
    person = await record(client, {"email": "lee@example.com"}, ("marketing", "email", "granted"))
    for round_ in range(3):
        async with await visitor_for(pg_backend) as visitor:
            device_id = (await post_choices(visitor, key, None, ALL_ON))["device_id"]
            choices = [{"cookies_analytics": bool(i % 2)} for i in range(8)]
            posts = [post_choices(visitor, key, device_id, c) for c in choices]
            results = await asyncio.gather(link(client, person["subject_id"], device_id), *posts)
        assert results[0]["merged_subject_id"] is not None and results[0]["events_merged"] >= 3
        assert all(len(r["events"]) == 1 for r in results[1:])  # every post was answered 201
        async with pg_backend.database.transaction(read_only=True) as session:
            rows = (await session.execute(
                sa.select(ConsentEvent.subject_id, ConsentEvent.event_id, ConsentEvent.evidence, ConsentEvent.captured_at,
                          ConsentEvent.seq, ConsentEvent.status, ConsentEvent.purpose)
                .where(ConsentEvent.tenant_id == tenant, ConsentEvent.purpose == "cookies_analytics")
            )).all()
        on_person = [r for r in rows if str(r.subject_id) == person["subject_id"]]
        copied = {r.evidence["merged_from"]["event_id"] for r in on_person if r.evidence and "merged_from" in r.evidence}
        device_events = [r for r in rows if str(r.subject_id) == results[0]["merged_subject_id"]]
        # Every event written on the device's own subject was copied to the person.
        assert {str(r.event_id) for r in device_events} <= copied, round_
        # The person's state is the newest analytics decision of all.
        newest = max((r for r in on_person), key=lambda r: (r.captured_at, r.seq))
        answer = await check(client, {"email": "lee@example.com"}, "cookies_analytics")
        assert answer["consent"]["status"] == newest.status


async def test_devices_linked_back_and_forth_do_not_multiply_the_history(client):
    """Found by a long schemathesis run: each link copied every copy again, doubling the history until a link took
    longer than the database timeout (503). A decision the target already holds is not copied again."""
    first = await record(client, {"device_id": "ping-device-0001"}, ("cookies_analytics", None, "granted"))
    second = await record(client, {"device_id": "pong-device-0001"}, ("cookies_advertising", None, "withdrawn"))
    merged = await link(client, second["subject_id"], "ping-device-0001")
    assert merged["events_merged"] == 1
    # The first subject (now without identifiers) gets a device of the second's: only what it lacks is copied.
    back = await link(client, first["subject_id"], "pong-device-0001")
    assert back["events_merged"] == 1
    for _ in range(6):
        again = await link(client, second["subject_id"], "pong-device-0001")
        assert again["events_merged"] == 0
    history = (await client.get(f"/v1/subjects/{first['subject_id']}/history")).json()["events"]
    assert len(history) == 2
    assert (await check(client, {"device_id": "pong-device-0001"}, "cookies_advertising"))["reason"] == "withdrawn"
