"""POST /v1/consents: recording decisions, identifiers, ordering, idempotency."""

import asyncio

import asyncpg
import pytest

from app.db import asyncpg_dsn
from tests.conftest import assert_problem, bearer
from tests.support.api import consent_body, record

JANE = {"email": "Jane.Doe@Example.com "}
BODY = consent_body(
    JANE,
    ("marketing", "email", "granted"),
    ("marketing", "sms", "withdrawn"),
    identifiers={"external_id": "C-1001", "phone": "07911 123456"},
    captured_at="2026-11-21T10:00:00Z",
    source="preference_centre",
    policy_version="2022-05",
    collection_point="checkout-form",
    evidence={"form_text": "Tick to hear about offers"},
)


async def test_record_creates_subject_and_events(client, token):
    response = await client.post("/v1/consents", json=BODY)
    assert response.status_code == 201, response.text
    body = response.json()
    events = body["events"]
    assert [(e["purpose"], e["channel"], e["status"]) for e in events] == [
        ("marketing", "email", "granted"),
        ("marketing", "sms", "withdrawn"),
    ]
    first = events[0]
    assert first["subject_id"] == body["subject_id"]
    assert first["purpose_version"] == 1
    assert first["captured_at"] == "2026-11-21T10:00:00Z"
    assert first["recorded_at"] > first["captured_at"]
    assert (first["source"], first["policy_version"], first["collection_point"]) == (
        "preference_centre", "2022-05", "checkout-form",
    )
    assert first["actor"] == "test-client"
    subject = (await client.get(f"/v1/subjects/{body['subject_id']}")).json()
    assert sorted((i["type"], i["value"]) for i in subject["identifiers"]) == [
        ("email", "jane.doe@example.com"),
        ("external_id", "C-1001"),
        ("phone", "+447911123456"),
    ]


async def test_known_identifier_reuses_the_subject(client):
    first = await record(client, JANE, ("marketing", "email", "granted"))
    again = await record(client, {"email": "jane.doe@example.com"}, ("marketing", "post", "granted"))
    by_id = await record(client, {"subject_id": first["subject_id"]}, ("profiling", None, "withdrawn"))
    assert first["subject_id"] == again["subject_id"] == by_id["subject_id"]


async def test_a_201_is_readable_from_a_second_connection(backend, client):
    """The transaction commits before the response leaves: another connection sees it at once."""
    body = await record(client, {"email": "seen@example.com"}, ("marketing", "email", "granted"))
    if backend.name == "postgres":
        connection = await asyncpg.connect(asyncpg_dsn(backend.url))
        try:
            count = await connection.fetchval(
                "SELECT count(*) FROM consent_events WHERE subject_id = $1::uuid", body["subject_id"]
            )
        finally:
            await connection.close()
    else:
        import sqlite3

        path = backend.url.split("///", 1)[1]
        with sqlite3.connect(path) as connection:
            (count,) = connection.execute(
                "SELECT count(*) FROM consent_events WHERE subject_id = ?", (body["subject_id"].replace("-", ""),)
            ).fetchone()
    assert count == 1


async def test_all_or_nothing(client):
    bad = consent_body(
        {"email": "half@example.com"}, ("marketing", "email", "granted"), ("marketing", "fax", "granted")
    )
    assert_problem(await client.post("/v1/consents", json=bad), 422)
    unknown = consent_body({"email": "half@example.com"}, ("marketing", "email", "granted"), ("nope", None, "granted"))
    body = assert_problem(await client.post("/v1/consents", json=unknown), 422)
    assert body["errors"][0]["loc"] == ["body", "decisions", 1, "purpose"]
    lookup = await client.post("/v1/subjects/lookup", json={"email": "half@example.com"})
    assert_problem(lookup, 404)


@pytest.mark.parametrize(
    ("decision", "why"),
    [
        ({"purpose": "marketing", "status": "granted"}, "needs a channel"),
        ({"purpose": "marketing", "channel": "pigeon", "status": "granted"}, "channel"),
        ({"purpose": "market_research", "channel": "sms", "status": "granted"}, "does not cover"),
        ({"purpose": "profiling", "channel": "email", "status": "granted"}, "has no channels"),
        ({"purpose": "marketing", "channel": "email", "status": "maybe"}, "status"),
        ({"purpose": "Marketing!", "channel": "email", "status": "granted"}, "purpose"),
    ],
)
async def test_channel_and_status_rules(client, decision, why):
    body = {"subject": {"email": "rules@example.com"}, "decisions": [decision]}
    problem = assert_problem(await client.post("/v1/consents", json=body), 422)
    assert why in str(problem).lower() or why in str(problem["errors"])


async def test_captured_at_in_the_future_is_refused(client):
    body = consent_body({"email": "f@example.com"}, ("marketing", "email", "granted"), captured_at="2999-01-01T00:00:00Z")
    assert_problem(await client.post("/v1/consents", json=body), 422)
    naive = consent_body({"email": "f@example.com"}, ("marketing", "email", "granted"), captured_at="2026-01-01T00:00:00")
    assert_problem(await client.post("/v1/consents", json=naive), 422)


async def test_identifier_of_another_subject_is_a_conflict(client):
    await record(client, {"email": "a@example.com"}, ("marketing", "email", "granted"), identifiers={"external_id": "X1"})
    body = consent_body({"email": "b@example.com"}, ("marketing", "email", "granted"), identifiers={"external_id": "X1"})
    assert_problem(await client.post("/v1/consents", json=body), 409)
    assert_problem(await client.post("/v1/subjects/lookup", json={"email": "b@example.com"}), 404)


async def test_late_older_decision_enters_history_but_not_state(client):
    subject = {"email": "late@example.com"}
    newer = await record(client, subject, ("marketing", "email", "withdrawn"), captured_at="2026-11-20T12:00:00Z")
    await record(client, subject, ("marketing", "email", "granted"), captured_at="2026-11-19T12:00:00Z")
    sid = newer["subject_id"]
    state = (await client.get(f"/v1/subjects/{sid}/consents")).json()["consents"]
    assert [(c["status"], c["event_id"]) for c in state] == [("withdrawn", newer["events"][0]["event_id"])]
    history = (await client.get(f"/v1/subjects/{sid}/history")).json()["events"]
    assert [e["status"] for e in history] == ["granted", "withdrawn"]


async def test_equal_captured_at_the_later_recorded_wins(client):
    subject = {"email": "tie@example.com"}
    at = "2026-11-20T12:00:00Z"
    await record(client, subject, ("marketing", "email", "granted"), captured_at=at)
    later = await record(client, subject, ("marketing", "email", "withdrawn"), captured_at=at)
    state = (await client.get(f"/v1/subjects/{later['subject_id']}/consents")).json()["consents"]
    assert state[0]["event_id"] == later["events"][0]["event_id"]


async def test_idempotent_retry_stores_once(client):
    headers = {"Idempotency-Key": "order-42"}
    body = consent_body({"email": "idem@example.com"}, ("marketing", "email", "granted"))
    first = await client.post("/v1/consents", json=body, headers=headers)
    # Same meaning, other key order: still the same request.
    second = await client.post("/v1/consents", json=dict(reversed(list(body.items()))), headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"
    history = (await client.get(f"/v1/subjects/{first.json()['subject_id']}/history")).json()
    assert len(history["events"]) == 1
    other = consent_body({"email": "idem@example.com"}, ("marketing", "email", "withdrawn"))
    assert_problem(await client.post("/v1/consents", json=other, headers=headers), 409)


async def test_idempotency_keys_are_per_tenant(client, anonymous, token, other_tenant):
    headers = {"Idempotency-Key": "shared-key"}
    body = consent_body({"email": "k@example.com"}, ("marketing", "email", "granted"))
    mine = await client.post("/v1/consents", json=body, headers=headers)
    theirs = await anonymous.post(
        "/v1/consents", json=body, headers=headers | bearer(token("consents:write", tenant_key=other_tenant))
    )
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["subject_id"] != theirs.json()["subject_id"]


async def test_failed_request_does_not_burn_the_idempotency_key(client):
    headers = {"Idempotency-Key": "retry-after-fix"}
    bad = consent_body({"email": "fix@example.com"}, ("marketing", "fax", "granted"))
    assert_problem(await client.post("/v1/consents", json=bad, headers=headers), 422)
    good = consent_body({"email": "fix@example.com"}, ("marketing", "email", "granted"))
    assert (await client.post("/v1/consents", json=good, headers=headers)).status_code == 201


async def test_needs_consents_write(anonymous, token):
    body = consent_body({"email": "s@example.com"}, ("marketing", "email", "granted"))
    assert_problem(await anonymous.post("/v1/consents", json=body), 401)
    for scopes in (("checks:read",), ("consents:read", "purposes:write")):
        response = await anonymous.post("/v1/consents", json=body, headers=bearer(token(*scopes)))
        assert_problem(response, 403)
    ok = await anonymous.post("/v1/consents", json=body, headers=bearer(token("consents:write")))
    assert ok.status_code == 201


async def test_subject_id_of_another_tenant_is_not_found(client, anonymous, token, other_tenant):
    mine = await record(client, {"email": "mine@example.com"}, ("marketing", "email", "granted"))
    body = consent_body({"subject_id": mine["subject_id"]}, ("marketing", "email", "withdrawn"))
    other = bearer(token("consents:write", tenant_key=other_tenant))
    assert_problem(await anonymous.post("/v1/consents", json=body, headers=other), 404)


async def test_concurrent_requests_for_a_new_person_make_one_subject(client):
    body = consent_body({"email": "race@example.com"}, ("marketing", "email", "granted"))
    responses = await asyncio.gather(*(client.post("/v1/consents", json=body) for _ in range(8)))
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["subject_id"] for r in responses}) == 1
