"""Data-subject requests: logged, verified, paused, resumed, extended, refused and listed, on the statutory clock."""

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from app.models import RequestLogEntry
from app.models.base import table_of, utcnow
from app.services.audit.request_log import chain_breaks
from app.services.requests import deadlines
from tests.conftest import assert_problem, bearer, stored_id
from tests.routers.test_public_banner import ALL_OFF, ALL_ON, SHOP, new_key, post_choices, standing
from tests.support.api import check, iso, record

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
        {"type": "rectification", "subject": {"email": "stranger@example.org"}, "details": {"add": {"email": "no address"}}},
        {"type": "rectification", "subject": PERSON, "details": {"remove": [{"phone": "12"}]}},
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


async def test_completing_a_restriction_makes_every_check_answer_restricted_until_it_is_lifted(client):
    known = await record(client, PERSON, ("marketing", "email", "granted"))
    filed = await file(client, "restriction", details={"grounds": "accuracy_contested"})
    assert (await check(client, PERSON, "marketing", "email"))["allowed"] is True
    done = await act(client, filed["request_id"], "complete")
    assert done["status"] == "completed" and done["outcome"]["done"] == ["restricted (accuracy_contested)"]
    # The flag's change is logged on its own, naming the subject: audit verify replays it (request_check).
    assert [(e["action"], e["note"]) for e in done["log"][-2:]] == [
        ("completed", "restricted (accuracy_contested)"), ("restricted", f"subject {known['subject_id']}"),
    ]
    answer = await check(client, PERSON, "marketing", "email")
    assert (answer["allowed"], answer["reason"]) == (False, "restricted")
    assert (await client.get(f"/v1/subjects/{known['subject_id']}")).json()["flags"] == ["restricted"]
    lifted = await act(client, (await file(client, "restriction", details={"lift": True}))["request_id"], "complete")
    assert lifted["outcome"]["done"] == ["restriction lifted"] and lifted["log"][-1]["action"] == "unrestricted"
    assert (await check(client, PERSON, "marketing", "email"))["allowed"] is True
    assert_problem(await client.post(f"/v1/requests/{filed['request_id']}/complete"), 409)
    assert (await client.get("/v1/audit/verify")).json()["ok"] is True


async def test_flags_changed_behind_the_service_s_back_fail_verification(client, backend):
    """Checks read a subject's flags: lifting a restriction or an erasure in the database, or restricting someone
    without a request, is a state_mismatch; altering a request's log breaks its chain."""
    restricted = (await record(client, {"email": "held.back@example.org"}, ("marketing", "email", "granted")))["subject_id"]
    restriction = await file(client, "restriction", subject={"subject_id": restricted}, details={"grounds": "legal_claim"})
    await act(client, restriction["request_id"], "complete")
    erased = (await record(client, {"email": "gone@example.org"}, ("marketing", "email", "granted")))["subject_id"]
    erasure = await file(client, "erasure", subject={"subject_id": erased}, verified={"method": "account"})
    await act(client, erasure["request_id"], "complete")
    bystander = (await record(client, {"email": "bystander@example.org"}, ("marketing", "email", "granted")))["subject_id"]
    assert (await client.get("/v1/audit/verify")).json()["ok"] is True
    async with backend.database.transaction() as session:
        for subject_id, flags in ((restricted, "[]"), (erased, "[]"), (bystander, '["restricted"]')):
            await session.execute(
                sa.text("UPDATE subjects SET flags = :flags WHERE id = :id"), {"flags": flags, "id": stored_id(backend, subject_id)}
            )
    verified = (await client.get("/v1/audit/verify")).json()
    mismatched = sorted((p["subject_id"], p["problem"]) for p in verified["problems"])
    assert mismatched == sorted((s, "state_mismatch") for s in (restricted, erased, bystander)), verified["problems"]
    assert (await check(client, {"subject_id": erased}, "marketing", "email"))["reason"] == "consent_granted"  # why it matters


async def test_an_objection_to_direct_marketing_withdraws_every_marketing_purpose_for_good(client):
    await record(client, PERSON, ("marketing", "email", "granted"), ("marketing", "sms", "granted"),
                 ("market_research", "email", "granted"))
    filed = await file(client, "objection", details={"to": "direct_marketing"})
    done = await act(client, filed["request_id"], "complete")
    assert done["outcome"]["done"] == [f"withdrew marketing/{c}" for c in ("email", "sms", "phone", "post")]
    for channel in ("email", "sms", "phone", "post"):
        assert (await check(client, PERSON, "marketing", channel))["reason"] == "withdrawn"
    assert (await check(client, PERSON, "market_research", "email"))["allowed"] is True  # research is no marketing
    history = (await client.get(f"/v1/subjects/{done['subject_id']}/history")).json()["events"]
    assert {e["method"] for e in history if e["status"] == "withdrawn"} == {"objection"}
    # An older grant imported later does not undo it: the objection is the newer decision.
    await record(client, PERSON, ("marketing", "email", "granted"), captured_at="2024-01-01T00:00:00Z")
    assert (await check(client, PERSON, "marketing", "email"))["reason"] == "withdrawn"


async def test_a_stranger_who_objects_to_direct_marketing_is_suppressed(client):
    stranger = {"email": "never.seen@example.org"}
    filed = await file(client, "objection", subject=stranger, details={"to": "direct_marketing"})
    done = await act(client, filed["request_id"], "complete")
    assert done["outcome"]["nothing_held"] is True and done["outcome"]["done"] == ["suppressed on email, sms, phone, post"]
    assert (await check(client, stranger, "marketing", "email"))["reason"] == "suppressed"
    unknown = await file(client, "objection", subject=stranger, details={"to": "purposes", "purposes": ["no_such_thing"]})
    assert_problem(await client.post(f"/v1/requests/{unknown['request_id']}/complete"), 422)
    assert (await client.get(f"/v1/requests/{unknown['request_id']}")).json()["status"] == "in_progress"


async def test_an_access_request_hands_over_an_export_and_a_signed_receipt(client, backend):
    await record(client, PERSON, ("marketing", "email", "granted"), evidence={"form": "signup", "ip": "192.0.2.1"})
    filed = await file(client, "access", verified={"method": "account"})
    assert_problem(await client.get(f"/v1/requests/{filed['request_id']}/export"), 409)
    assert_problem(await client.get(f"/v1/requests/{filed['request_id']}/receipt"), 409)
    done = await act(client, filed["request_id"], "complete")
    assert done["outcome"]["export"] == f"/v1/requests/{filed['request_id']}/export"
    response = await client.get(f"/v1/requests/{filed['request_id']}/export")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.headers["content-disposition"].startswith("attachment;")
    export = response.json()
    assert export["identifiers"] == [{"type": "email", "value": "ada.lovelace@example.org"}]
    assert [(c["purpose"], c["channel"], c["status"]) for c in export["consents"]] == [("marketing", "email", "granted")]
    assert export["history"][0]["evidence"] == {"form": "signup", "ip": "192.0.2.1"}
    assert [r["request_id"] for r in export["requests"]] == [filed["request_id"]]
    log = (await client.get("/v1/audit/access-log", params={"subject_id": done["subject_id"]})).json()["entries"]
    assert "subject.export" in {entry["action"] for entry in log}

    signed = (await client.get(f"/v1/requests/{filed['request_id']}/receipt")).json()
    claims = backend.services.signer.verify(signed["jws"], typ="request-receipt+jwt")
    assert claims["request_id"] == filed["request_id"] and claims["status"] == "completed"
    assert claims["outcome"] == done["outcome"] and claims["log_length"] == len(done["log"])


async def test_portability_hands_over_what_the_person_provided(client):
    await record(client, PERSON, ("marketing", "email", "granted"), evidence={"form": "signup"})
    filed = await file(client, "portability", verified={"method": "account"})
    await act(client, filed["request_id"], "complete")
    export = (await client.get(f"/v1/requests/{filed['request_id']}/export")).json()
    assert set(export) == {"request_id", "type", "exported_at", "subject_id", "identifiers", "decisions"}
    assert [(d["purpose"], d["channel"], d["status"]) for d in export["decisions"]] == [("marketing", "email", "granted")]
    stranger = await file(client, "access", subject={"email": "x@example.org"}, verified={"method": "account"})
    await act(client, stranger["request_id"], "complete")
    nothing = (await client.get(f"/v1/requests/{stranger['request_id']}/export")).json()
    assert nothing["subject_id"] is None and nothing["held"].startswith("nothing")


async def test_completion_waits_for_verification_and_clarification(client):
    waiting = await file(client, "access")
    assert "verified" in assert_problem(await client.post(f"/v1/requests/{waiting['request_id']}/complete"), 409)["detail"]
    paused = await file(client, "restriction", details={"grounds": "legal_claim"})
    await act(client, paused["request_id"], "clarify", {"question": "Which data?"})
    assert_problem(await client.post(f"/v1/requests/{paused['request_id']}/complete"), 409)
    erasure = await file(client, "erasure")
    assert "verified" in assert_problem(await client.post(f"/v1/requests/{erasure['request_id']}/complete"), 409)["detail"]
    assert (await client.get(f"/v1/requests/{erasure['request_id']}")).json()["status"] == "pending_verification"


async def test_completing_and_its_export_and_receipt_keep_to_scopes_and_tenants(client, token, other_tenant):
    filed = await file(client, "access", verified={"method": "account"})
    path = f"/v1/requests/{filed['request_id']}"
    reader, theirs = bearer(token("consents:read")), bearer(token("requests:write", tenant_key=other_tenant))
    assert_problem(await client.post(f"{path}/complete", headers=reader), 403)
    assert_problem(await client.post(f"{path}/complete", headers=theirs), 404)
    await act(client, filed["request_id"], "complete")
    for suffix in ("export", "receipt"):
        assert (await client.get(f"{path}/{suffix}", headers=reader)).status_code == 200
        assert_problem(await client.get(f"{path}/{suffix}", headers=theirs), 404)
        assert_problem(await client.get(f"{path}/{suffix}", headers=bearer(token("checks:read"))), 403)


async def test_two_completions_at_once_store_once(client, pg_backend):
    await record(client, PERSON, ("marketing", "email", "granted"))
    filed = await file(client, "objection", details={"to": "direct_marketing"})
    answers = await asyncio.gather(*(client.post(f"/v1/requests/{filed['request_id']}/complete") for _ in range(3)))
    assert sorted(a.status_code for a in answers) == [200, 409, 409]
    history = (await client.get(f"/v1/subjects/{answers[0].json().get('subject_id') or filed['subject_id']}/history")).json()
    assert sum(1 for e in history["events"] if e["method"] == "objection") == 4


async def test_a_legal_hold_is_placed_listed_and_released(client, backend):
    subject_id = (await record(client, PERSON, ("marketing", "email", "granted")))["subject_id"]
    path = f"/v1/subjects/{subject_id}/holds"
    placed = await client.post(path, json={"reason": "legal_claim", "note": "claim 2026/123", "until": "2030-01-01T00:00:00Z"})
    assert placed.status_code == 201, placed.text
    hold = placed.json()
    assert (hold["reason"], hold["note"], hold["until"], hold["released_at"]) == (
        "legal_claim", "claim 2026/123", "2030-01-01T00:00:00Z", None,
    )
    second = (await client.post(path, json={"reason": "open_dispute"})).json()
    assert [h["hold_id"] for h in (await client.get(path)).json()["holds"]] == [hold["hold_id"], second["hold_id"]]
    released = await client.post(f"{path}/{hold['hold_id']}/release")
    assert released.status_code == 200 and released.json()["released_at"] is not None
    assert_problem(await client.post(f"{path}/{hold['hold_id']}/release"), 409)
    assert_problem(await client.post(f"{path}/{uuid.uuid4()}/release"), 404)
    filed = await file(client, "access", verified={"method": "account"})
    await act(client, filed["request_id"], "complete")
    export = (await client.get(f"/v1/requests/{filed['request_id']}/export")).json()
    assert [(h["reason"], h["released_at"] is None) for h in export["holds"]] == [("legal_claim", False), ("open_dispute", True)]

    before = await count(backend, "legal_holds")
    for body in ({"reason": "boredom"}, {"reason": "misuse", "until": "2020-01-01T00:00:00Z"}, {"reason": "misuse", "note": "x" * 2001},
                 {"reason": "misuse", "surprise": 1}, {}):
        assert_problem(await client.post(path, json=body), 422)
    assert await count(backend, "legal_holds") == before
    assert_problem(await client.post(f"/v1/subjects/{uuid.uuid4()}/holds", json={"reason": "misuse"}), 404)


async def test_holds_keep_to_scopes_and_tenants(client, token, other_tenant):
    subject_id = (await record(client, PERSON, ("marketing", "email", "granted")))["subject_id"]
    path = f"/v1/subjects/{subject_id}/holds"
    hold = (await client.post(path, json={"reason": "misuse"})).json()
    reader, theirs = bearer(token("consents:read")), bearer(token("requests:write", tenant_key=other_tenant))
    assert (await client.get(path, headers=reader)).status_code == 200
    assert_problem(await client.post(path, json={"reason": "misuse"}, headers=reader), 403)
    assert_problem(await client.post(f"{path}/{hold['hold_id']}/release", headers=reader), 403)
    assert_problem(await client.get(path, headers=bearer(token("checks:read"))), 403)
    assert_problem(await client.get(path, headers=theirs), 404)
    assert_problem(await client.post(path, json={"reason": "misuse"}, headers=theirs), 404)
    assert_problem(await client.post(f"{path}/{hold['hold_id']}/release", headers=theirs), 404)
    assert (await client.get(path)).json()["holds"][0]["released_at"] is None


async def test_a_rectification_replaces_an_identifier_and_names_the_recipients_to_tell(client):
    sharing = {"title": "Share with Acme", "legal_basis": "consent", "category": "sharing", "third_party": "Acme Ltd"}
    assert (await client.put("/v1/purposes/share_acme", json=sharing)).status_code in (200, 201)
    known = await record(client, PERSON, ("marketing", "email", "granted"), ("share_acme", None, "granted"))
    new = {"email": "ada@lovelace.example"}
    filed = await file(
        client, "rectification", verified={"method": "account"},
        details={"add": new, "remove": [PERSON, {"phone": "+44 20 7946 0001"}]},
    )
    done = await act(client, filed["request_id"], "complete")
    assert done["outcome"]["done"] == ["removed the email", "added the email"]
    assert done["outcome"]["withheld"] == [{"identifier": "phone", "reason": "not an identifier of this person"}]
    assert done["outcome"]["recipients"] == [{"third_party": "Acme Ltd", "purpose": "share_acme"}]
    subject = (await client.get(f"/v1/subjects/{known['subject_id']}")).json()
    assert [(i["type"], i["value"]) for i in subject["identifiers"]] == [("email", "ada@lovelace.example")]
    assert (await check(client, new, "marketing", "email"))["allowed"] is True
    assert (await check(client, PERSON, "marketing", "email"))["reason"] == "unknown_subject"


async def test_a_rectification_to_an_identifier_another_person_holds_is_a_409_and_changes_nothing(client, backend):
    await record(client, PERSON, ("marketing", "email", "granted"))
    other = {"email": "someone.else@example.org"}
    await record(client, other, ("marketing", "email", "granted"))
    before = await count(backend)
    assert_problem(await client.post("/v1/requests", json={
        "type": "rectification", "subject": PERSON, "details": {"add": other},
    }), 409)
    assert await count(backend) == before
    assert_problem(await client.post("/v1/requests", json={
        "type": "rectification", "subject": PERSON, "details": {"remove": [{"subject_id": str(uuid.uuid4())}]},
    }), 422)
    # Taken between the request and its completion: the completion is refused, and nothing moves.
    late = {"email": "late.comer@example.org"}
    filed = await file(client, "rectification", verified={"method": "account"}, details={"add": late, "remove": [PERSON]})
    await record(client, late, ("marketing", "email", "granted"))
    assert_problem(await client.post(f"/v1/requests/{filed['request_id']}/complete"), 409)
    assert (await client.get(f"/v1/requests/{filed['request_id']}")).json()["status"] == "in_progress"
    assert (await check(client, PERSON, "marketing", "email"))["allowed"] is True


async def test_the_banner_shows_a_restricted_device_every_category_off_and_does_not_ask(client, backend, tenant):
    key = await new_key(backend, tenant)
    transport = httpx.ASGITransport(app=backend.app, client=("203.0.113.77", 50000))
    headers = {"Origin": SHOP, "User-Agent": "Mozilla/5.0 (test)"}
    async with httpx.AsyncClient(transport=transport, base_url="http://consentd.test", headers=headers) as browser:
        device = {"device_id": (await post_choices(browser, key, None, ALL_ON))["device_id"]}
        assert (await standing(browser, key, device["device_id"]))["choices"] == ALL_ON
        filed = await file(client, "restriction", subject=device, details={"grounds": "unlawful_processing"})
        await act(client, filed["request_id"], "complete")
        restricted = await standing(browser, key, device["device_id"])
        assert restricted == {"choices": ALL_OFF, "policy_version": None, "expires_at": None, "reprompt": False}
        lift = await file(client, "restriction", subject=device, details={"lift": True})
        await act(client, lift["request_id"], "complete")
        assert (await standing(browser, key, device["device_id"]))["choices"] == ALL_ON


async def link_for(client, request_id: str, expect: int = 200) -> dict:
    response = await client.post(f"/v1/requests/{request_id}/verification-link")
    assert response.status_code == expect, response.text
    return response.json()


async def test_the_person_verifies_through_a_link_that_keeps_its_token_out_of_urls_and_logs(client, anonymous, backend, caplog):
    filed = await file(client, "access", received_via="email")
    link = await link_for(client, filed["request_id"])
    page, token = link["url"].split("#")
    assert page == "http://consentd.test/requests/verify" and len(token) >= 40
    assert datetime.fromisoformat(link["expires_at"].replace("Z", "+00:00")) > utcnow() + timedelta(days=6)
    # Opening the page (a mail scanner's GET) confirms nothing, and the page never sees the token.
    shown = await anonymous.get("/requests/verify")
    assert shown.status_code == 200 and "Confirm my request" in shown.text and token not in shown.text
    assert "frame-ancestors 'none'" in shown.headers["content-security-policy"]
    assert (await client.get(f"/v1/requests/{filed['request_id']}")).json()["status"] == "pending_verification"

    confirmed = await anonymous.post("/v1/public/requests/verify", json={"token": token})
    assert confirmed.status_code == 200 and confirmed.json() == {"verified": True, "type": "access"}
    again = await anonymous.post("/v1/public/requests/verify", json={"token": token})
    assert again.status_code == 200  # confirming twice is fine
    request = (await client.get(f"/v1/requests/{filed['request_id']}")).json()
    assert request["status"] == "in_progress" and request["verified"]["method"] == "email_link"
    assert request["due_at"] == due_from(today())
    assert [(e["action"], e["actor"]) for e in request["log"]] == [
        ("received", "test-client"), ("verification_link", "test-client"), ("verified", "the person (verification link)"),
    ]
    # The token is nowhere: not in the log, not in any table, not in the server's log lines.
    assert token not in str(request) and token not in caplog.text
    async with backend.database.transaction() as session:
        stored = (await session.execute(sa.text("SELECT link_hash FROM data_requests WHERE link_hash IS NOT NULL"))).scalars().all()
    assert stored and all(token not in value for value in stored)
    # Once verified, no new link is made.
    assert_problem(await client.post(f"/v1/requests/{filed['request_id']}/verification-link"), 409)


async def test_a_verification_link_expires_and_a_new_one_replaces_it(client, anonymous, backend):
    filed = await file(client, "erasure")
    first = (await link_for(client, filed["request_id"]))["url"].split("#")[1]
    second = (await link_for(client, filed["request_id"]))["url"].split("#")[1]
    assert_problem(await anonymous.post("/v1/public/requests/verify", json={"token": first}), 404)
    async with backend.database.transaction() as session:
        await session.execute(
            sa.text("UPDATE data_requests SET link_expires_at = :at WHERE id = :id"),
            {"at": utcnow() - timedelta(seconds=1), "id": stored_id(backend, filed["request_id"])},
        )
    assert_problem(await anonymous.post("/v1/public/requests/verify", json={"token": second}), 404)
    assert (await client.get(f"/v1/requests/{filed['request_id']}")).json()["status"] == "pending_verification"
    for body in ({}, {"token": "short"}, {"token": "x" * 200}, {"token": "has spaces in it, twenty plus"}, {"token": 5}):
        assert_problem(await anonymous.post("/v1/public/requests/verify", json=body), 422)
    assert_problem(await anonymous.post("/v1/public/requests/verify", json={"token": "A" * 43}), 404)


async def test_a_verification_link_keeps_to_scopes_tenants_and_states(client, token, other_tenant):
    filed = await file(client, "access")
    path = f"/v1/requests/{filed['request_id']}/verification-link"
    assert_problem(await client.post(path, headers=bearer(token("consents:read"))), 403)
    assert_problem(await client.post(path, headers=bearer(token("requests:write", tenant_key=other_tenant))), 404)
    assert_problem(await client.post(f"/v1/requests/{uuid.uuid4()}/verification-link"), 404)
    restriction = await file(client, "restriction", details={"grounds": "legal_claim"})  # needs no verification
    assert_problem(await client.post(f"/v1/requests/{restriction['request_id']}/verification-link"), 409)
    refused = await file(client, "access")
    link = (await link_for(client, refused["request_id"]))["url"].split("#")[1]
    await act(client, refused["request_id"], "refuse", {"reason": "excessive", "detail": "the fifth this week"})
    assert_problem(await client.post("/v1/public/requests/verify", json={"token": link}, headers={"Authorization": ""}), 409)
