"""Data-subject requests: logged, verified, paused, resumed, extended, refused and listed, on the statutory clock."""

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from app.models import RequestLogEntry
from app.models.base import table_of, utcnow
from app.services.requests import deadlines
from app.services.requests.log import chain_breaks
from tests.conftest import assert_problem, bearer, stored_id
from tests.support.api import iso, record

ENG = "GB-ENG"
PERSON = {"email": "Ada.Lovelace@example.org"}


def today() -> date:
    return deadlines.uk_day(utcnow())


def due_from(day: date, paused: int = 0, months: int = 1) -> str:
    return deadlines.due(day, paused_days=paused, region=ENG, months=months).isoformat()


async def file(http, type: str = "access", subject: dict | None = None, expect: int = 201, **extra) -> dict:
    response = await http.post("/v1/requests", json={"type": type, "subject": subject or PERSON, **extra})
    assert response.status_code == expect, response.text
    return response.json()


async def act(http, request_id: str, action: str, body: dict | None = None, expect: int = 200) -> dict:
    response = await http.post(f"/v1/requests/{request_id}/{action}", json=body or {})
    assert response.status_code == expect, response.text
    return response.json()


async def count(backend, table: str = "data_requests") -> int:
    async with backend.database.transaction() as session:
        return (await session.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one()


async def test_an_access_request_waits_for_verification_then_runs_on_the_clock(client):
    await record(client, PERSON, ("marketing", "email", "granted"))
    filed = await file(client, "access", received_via="email")
    assert filed["status"] == "pending_verification" and filed["subject_id"] is not None
    assert (filed["due_at"], filed["clock_started_at"], filed["verified"]) == (None, None, None)
    assert [entry["action"] for entry in filed["log"]] == ["received"]
    assert filed["log"][0]["actor"] == "test-client" and filed["log"][0]["note"] == "received by email"

    verified = await act(client, filed["request_id"], "verify", {"method": "document", "note": "passport seen"})
    assert verified["status"] == "in_progress" and verified["verified"]["method"] == "document"
    assert verified["due_at"] == due_from(today()) and verified["extended_due_at"] is None
    assert [entry["action"] for entry in verified["log"]] == ["received", "verified"]
    assert verified["log"][1]["note"] == "method: document; passport seen"
    again = (await client.get(f"/v1/requests/{filed['request_id']}")).json()
    assert again == verified
    assert_problem(await client.post(f"/v1/requests/{filed['request_id']}/verify", json={"method": "account"}), 409)


async def test_the_clock_starts_on_the_day_the_request_arrived(client):
    received = datetime(2025, 9, 3, 10, 0, tzinfo=UTC)
    filed = await file(client, "restriction", details={"grounds": "accuracy_contested"}, received_at=iso(received))
    # Restriction needs no identity check: in progress at once, due on the ICO's example date.
    assert filed["status"] == "in_progress" and filed["subject_id"] is None
    assert (filed["due_at"], filed["clock_started_at"]) == ("2025-10-03", "2025-09-03T10:00:00Z")
    # Verified on arrival with the request: an access request's clock starts on the day of the check.
    checked = datetime(2025, 9, 5, 9, 0, tzinfo=UTC)
    access = await file(
        client, "access", received_at=iso(received), verified={"method": "in_person", "at": iso(checked)}
    )
    assert access["status"] == "in_progress" and access["due_at"] == "2025-10-06"  # 5 October 2025: a Sunday
    assert [entry["action"] for entry in access["log"]] == ["received", "verified"]


async def test_a_clarification_stops_the_clock_and_an_extension_runs_to_three_months(client):
    filed = await file(client, "objection", details={"to": "direct_marketing"})
    paused = await act(client, filed["request_id"], "clarify", {"question": "Which of our newsletters do you mean?"})
    assert paused["status"] == "awaiting_clarification"
    assert_problem(await client.post(f"/v1/requests/{filed['request_id']}/clarify", json={"question": "again?"}), 409)
    resumed = await act(client, filed["request_id"], "resume", {"note": "all of them"})
    assert resumed["status"] == "in_progress" and resumed["paused_days"] == 0 and resumed["due_at"] == due_from(today())
    assert resumed["log"][-1]["note"] == "paused 0 days; all of them"
    assert_problem(await client.post(f"/v1/requests/{filed['request_id']}/resume", json={}), 409)

    extended = await act(client, filed["request_id"], "extend", {"reason": "complex", "notified_at": iso(utcnow())})
    assert extended["extended_due_at"] == due_from(today(), months=3) and extended["due_at"] == due_from(today())
    assert extended["log"][-1]["action"] == "extended" and extended["log"][-1]["note"].startswith("complex (the person")
    twice = await client.post(f"/v1/requests/{filed['request_id']}/extend", json={"reason": "x", "notified_at": iso(utcnow())})
    assert "once" in assert_problem(twice, 409)["detail"]


async def test_paused_days_move_the_due_dates(client, backend):
    filed = await file(client, "objection", details={"to": "profiling"})
    await act(client, filed["request_id"], "extend", {"reason": "complex", "notified_at": iso(utcnow())})
    await act(client, filed["request_id"], "clarify", {"question": "Which?"})
    # Five days pass while the person thinks.
    async with backend.database.transaction() as session:
        await session.execute(
            sa.text("UPDATE data_requests SET paused_on = :day WHERE id = :id"),
            {"day": today() - timedelta(days=5), "id": stored_id(backend, filed["request_id"])},
        )
    resumed = await act(client, filed["request_id"], "resume")
    assert resumed["paused_days"] == 5
    assert resumed["due_at"] == due_from(today(), paused=5)
    assert resumed["extended_due_at"] == due_from(today(), paused=5, months=3)


async def test_an_extension_after_the_due_date_or_before_the_clock_is_refused(client):
    late = await file(
        client, "restriction", details={"lift": True}, received_at=iso(utcnow() - timedelta(days=70)), received_via="post"
    )
    body = {"reason": "complex", "notified_at": iso(utcnow())}
    assert "due on" in assert_problem(await client.post(f"/v1/requests/{late['request_id']}/extend", json=body), 409)["detail"]
    waiting = await file(client, "erasure")
    assert_problem(await client.post(f"/v1/requests/{waiting['request_id']}/extend", json=body), 409)
    future = {"reason": "complex", "notified_at": iso(utcnow() + timedelta(days=1))}
    ok = await file(client, "restriction", details={"grounds": "legal_claim"})
    assert_problem(await client.post(f"/v1/requests/{ok['request_id']}/extend", json=future), 422)


async def test_a_refused_request_takes_no_further_action(client):
    filed = await file(client, "erasure")
    refused = await act(client, filed["request_id"], "refuse", {"reason": "identity_not_verified", "detail": "no reply"})
    assert refused["status"] == "refused" and refused["outcome"]["refused"] == "identity_not_verified"
    assert refused["log"][-1] == {
        "at": refused["log"][-1]["at"], "action": "refused", "actor": "test-client", "note": "identity_not_verified: no reply",
    }
    for action, body in (
        ("verify", {"method": "account"}), ("clarify", {"question": "?"}), ("resume", {}),
        ("extend", {"reason": "x", "notified_at": iso(utcnow())}), ("refuse", {"reason": "excessive", "detail": "x"}),
    ):
        answer = await client.post(f"/v1/requests/{filed['request_id']}/{action}", json=body)
        assert "already refused" in assert_problem(answer, 409)["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"type": "deletion", "subject": PERSON},
        {"type": "access", "subject": {}},
        {"type": "access", "subject": {"email": "not an address"}},
        {"type": "access", "subject": PERSON, "received_at": "2999-01-01T00:00:00Z"},
        {"type": "access", "subject": PERSON, "received_at": "2025-01-01T00:00:00"},
        {"type": "access", "subject": PERSON, "received_via": "carrier pigeon"},
        {"type": "access", "subject": PERSON, "details": {"anything": 1}},
        {"type": "access", "subject": PERSON, "verified": {"method": "telepathy"}},
        {"type": "access", "subject": PERSON, "received_at": "2025-02-01T00:00:00Z",
         "verified": {"method": "account", "at": "2025-01-01T00:00:00Z"}},
        {"type": "rectification", "subject": PERSON},
        {"type": "rectification", "subject": PERSON, "details": {"add": {}}},
        {"type": "rectification", "subject": PERSON, "details": {"add": {"device_id": "d1"}}},
        {"type": "restriction", "subject": PERSON, "details": {}},
        {"type": "restriction", "subject": PERSON, "details": {"grounds": "legal_claim", "lift": True}},
        {"type": "restriction", "subject": PERSON, "details": {"grounds": "boredom"}},
        {"type": "objection", "subject": PERSON, "details": {"to": "purposes"}},
        {"type": "objection", "subject": PERSON, "details": {"to": "profiling", "purposes": ["analytics"]}},
        {"type": "access", "subject": PERSON, "surprise": True},
    ],
)
async def test_bad_input_is_a_422_and_stores_nothing(client, backend, body):
    before = await count(backend), await count(backend, "data_request_log")
    assert_problem(await client.post("/v1/requests", json=body), 422)
    assert (await count(backend), await count(backend, "data_request_log")) == before


async def test_bad_action_bodies_are_422s_and_change_nothing(client, backend):
    filed = await file(client, "restriction", details={"grounds": "unlawful_processing"})
    path = f"/v1/requests/{filed['request_id']}"
    for action, body in (
        ("verify", {"method": "guess"}), ("clarify", {}), ("clarify", {"question": "x" * 2001}),
        ("extend", {"reason": "complex"}), ("extend", {"reason": "", "notified_at": iso(utcnow())}),
        ("refuse", {"reason": "bored", "detail": "x"}), ("refuse", {"reason": "excessive"}), ("resume", {"note": "\x00"}),
    ):
        assert_problem(await client.post(f"{path}/{action}", json=body), 422)
    assert (await client.get(path)).json() == filed
    assert_problem(await client.get("/v1/requests/not-a-uuid"), 422)
    assert_problem(await client.get("/v1/requests?due_before=someday"), 422)
    assert_problem(await client.get("/v1/requests?cursor=bm90LWpzb24"), 422)
    assert_problem(await client.get("/v1/requests?limit=0"), 422)


async def test_an_unknown_subject_id_is_a_404_and_an_unknown_person_still_gets_a_request(client):
    assert_problem(await client.post("/v1/requests", json={"type": "access", "subject": {"subject_id": str(uuid.uuid4())}}), 404)
    stranger = await file(client, "erasure", subject={"phone": "+44 20 7946 0000"})
    assert stranger["subject_id"] is None and stranger["status"] == "pending_verification"
    known = await record(client, {"external_id": "C-1"}, ("marketing", "email", "granted"))
    by_id = await file(client, "restriction", subject={"subject_id": known["subject_id"]}, details={"lift": True})
    assert by_id["subject_id"] == known["subject_id"]


async def test_requests_are_listed_soonest_due_first_page_by_page(client):
    now = utcnow()
    filed = [
        await file(client, "restriction", details={"grounds": "legal_claim"}, received_at=iso(now - timedelta(days=days)))
        for days in (3, 20, 10, 1, 15)
    ]
    waiting = await file(client, "access")
    listed, cursor = [], None
    while True:
        page = (await client.get("/v1/requests", params={"limit": 2, **({"cursor": cursor} if cursor else {})})).json()
        listed += page["requests"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    by_due = sorted(filed, key=lambda r: (r["due_at"], r["request_id"]))
    assert [r["request_id"] for r in listed] == [r["request_id"] for r in by_due] + [waiting["request_id"]]
    due_before = by_due[2]["due_at"]
    soon = (await client.get("/v1/requests", params={"due_before": due_before})).json()["requests"]
    assert {r["request_id"] for r in soon} == {r["request_id"] for r in by_due if r["due_at"] < due_before}
    pending = (await client.get("/v1/requests", params={"status": "pending_verification"})).json()["requests"]
    assert [r["request_id"] for r in pending] == [waiting["request_id"]]
    assert (await client.get("/v1/requests", params={"type": "erasure"})).json() == {"requests": [], "next_cursor": None}


async def test_reading_takes_requests_write_or_consents_read_and_acting_requests_write(client, anonymous, token):
    filed = await file(client, "erasure")
    path = f"/v1/requests/{filed['request_id']}"
    for scopes, reads, writes in (
        (("requests:write",), True, True), (("consents:read",), True, False), (("checks:read", "consents:write"), False, False),
    ):
        headers = bearer(token(*scopes))
        assert (await client.get(path, headers=headers)).status_code == (200 if reads else 403)
        assert (await client.get("/v1/requests", headers=headers)).status_code == (200 if reads else 403)
        created = await client.post("/v1/requests", json={"type": "access", "subject": PERSON}, headers=headers)
        assert created.status_code == (201 if writes else 403), created.text
        acted = await client.post(f"{path}/clarify", json={"question": "?"}, headers=headers)
        assert acted.status_code == (409 if writes else 403), acted.text  # 409: still waiting for verification
    assert_problem(await anonymous.get(path), 401)
    assert_problem(await anonymous.post("/v1/requests", json={"type": "access", "subject": PERSON}), 401)


async def test_another_tenants_request_is_a_404(client, other_tenant, token):
    filed = await file(client, "restriction", details={"grounds": "legal_claim"})
    theirs = bearer(token("requests:write", tenant_key=other_tenant))
    path = f"/v1/requests/{filed['request_id']}"
    assert_problem(await client.get(path, headers=theirs), 404)
    for action, body in (("clarify", {"question": "?"}), ("refuse", {"reason": "excessive", "detail": "x"})):
        assert_problem(await client.post(f"{path}/{action}", json=body, headers=theirs), 404)
    assert (await client.get("/v1/requests", headers=theirs)).json()["requests"] == []
    assert (await client.get(path)).json() == filed


async def test_the_log_is_chained_and_the_database_refuses_to_change_it(client, backend):
    filed = await file(client, "objection", details={"to": "direct_marketing"})
    await act(client, filed["request_id"], "clarify", {"question": "Which?"})
    await act(client, filed["request_id"], "resume", {"note": "all"})
    log = table_of(RequestLogEntry)
    async with backend.database.transaction() as session:
        rows = (await session.execute(
            sa.select(log).where(log.c.request_id == uuid.UUID(filed["request_id"])).order_by(log.c.chain_index)
        )).mappings().all()
    entries = [dict(row) for row in rows]
    tenant = entries[0]["tenant_id"]
    assert [e["action"] for e in entries] == ["received", "clarification_requested", "resumed"]
    assert chain_breaks(tenant, uuid.UUID(filed["request_id"]), entries) == []
    assert chain_breaks(tenant, uuid.UUID(filed["request_id"]), [entries[0], entries[2]]) == [3]
    for statement in ("UPDATE data_request_log SET note = 'nothing happened'", "DELETE FROM data_request_log"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            async with backend.database.transaction() as session:
                await session.execute(sa.text(statement))
    assert len((await client.get(f"/v1/requests/{filed['request_id']}")).json()["log"]) == 3


async def test_two_extensions_at_once_store_one(client, pg_backend):
    filed = await file(client, "restriction", details={"grounds": "legal_claim"})
    body = {"reason": "complex", "notified_at": iso(utcnow())}
    answers = await asyncio.gather(
        *(client.post(f"/v1/requests/{filed['request_id']}/extend", json=body) for _ in range(4))
    )
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409]
    log = (await client.get(f"/v1/requests/{filed['request_id']}")).json()["log"]
    assert [entry["action"] for entry in log] == ["received", "extended"]
