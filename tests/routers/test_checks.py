"""POST /v1/checks and /v1/checks/batch: decisions, reasons, expiry, tenancy."""

from datetime import UTC, datetime, timedelta

from tests.conftest import assert_problem, bearer
from tests.support.api import check, iso, record


async def test_granted_then_withdrawn(client):
    subject = {"email": "c@example.com"}
    recorded = await record(client, subject, ("marketing", "email", "granted"), policy_version="2022-05")
    answer = await check(client, subject, "marketing", "email")
    assert answer["allowed"] is True and answer["reason"] == "consent_granted"
    assert answer["subject_id"] == recorded["subject_id"]
    assert answer["legal_basis"] == "consent"
    assert answer["consent"]["event_id"] == recorded["events"][0]["event_id"]
    assert answer["consent"]["policy_version"] == "2022-05"
    assert answer["consent"]["expires_at"] is not None  # marketing has a 365-day lifespan
    assert answer["checked_at"].endswith("Z")
    await record(client, subject, ("marketing", "email", "withdrawn"))
    answer = await check(client, subject, "marketing", "email")
    assert (answer["allowed"], answer["reason"], answer["consent"]["status"]) == (False, "withdrawn", "withdrawn")


async def test_reasons(client):
    subject = {"external_id": "R-1"}
    await record(client, subject, ("marketing", "email", "granted"))
    assert (await check(client, subject, "marketing", "sms"))["reason"] == "no_consent"
    unknown = await check(client, {"email": "nobody@example.com"}, "marketing", "email")
    assert (unknown["allowed"], unknown["reason"], unknown["subject_id"]) == (False, "unknown_subject", None)
    assert (await check(client, subject, "profiling"))["reason"] == "legitimate_interest"
    await record(client, subject, ("profiling", None, "withdrawn"))
    objected = await check(client, subject, "profiling")
    assert (objected["allowed"], objected["reason"]) == (False, "objected")


async def test_expired_grant(client):
    subject = {"email": "old@example.com"}
    captured = datetime.now(UTC) - timedelta(days=400)
    await record(client, subject, ("marketing", "post", "granted"), captured_at=iso(captured))
    answer = await check(client, subject, "marketing", "post")
    assert (answer["allowed"], answer["reason"]) == (False, "expired")
    assert answer["consent"]["expires_at"] == iso(captured + timedelta(days=365))


async def test_reconfirm_due(client):
    subject = {"email": "sensitive@example.com"}
    await record(client, subject, ("sensitive_data", None, "granted"), captured_at=iso(datetime.now(UTC) - timedelta(days=200)))
    assert (await check(client, subject, "sensitive_data"))["reason"] == "reconsent_required"
    await record(client, subject, ("sensitive_data", None, "granted"))
    assert (await check(client, subject, "sensitive_data"))["reason"] == "consent_granted"


async def test_lookup_by_every_identifier_type(client):
    recorded = await record(
        client, {"device_id": "dev-1"}, ("cookies_analytics", None, "granted"),
        identifiers={"phone": "+44 7911 123457", "external_id": "E-9", "email": "ids@example.com"},
    )
    for ref in ({"device_id": "dev-1"}, {"phone": "07911123457"}, {"external_id": "E-9"},
                {"email": "IDS@example.com"}, {"subject_id": recorded["subject_id"]}):
        assert (await check(client, ref, "cookies_analytics"))["allowed"] is True, ref


async def test_unknown_purpose_and_foreign_channel(client):
    assert_problem(await client.post("/v1/checks", json={"subject": {"email": "a@example.com"}, "purpose": "nope"}), 404)
    foreign = {"subject": {"email": "a@example.com"}, "purpose": "market_research", "channel": "sms"}
    assert_problem(await client.post("/v1/checks", json=foreign), 422)
    missing = {"subject": {"email": "a@example.com"}, "purpose": "marketing"}
    assert_problem(await client.post("/v1/checks", json=missing), 422)
    invalid_email = {"subject": {"email": "not-an-email"}, "purpose": "marketing", "channel": "email"}
    assert assert_problem(await client.post("/v1/checks", json=invalid_email), 422)["errors"][0]["loc"][-1] == "email"
    two_refs = {"subject": {"email": "a@example.com", "phone": "+447911123456"}, "purpose": "marketing", "channel": "email"}
    assert_problem(await client.post("/v1/checks", json=two_refs), 422)


async def test_needs_checks_read(anonymous, token):
    body = {"subject": {"email": "a@example.com"}, "purpose": "marketing", "channel": "email"}
    assert_problem(await anonymous.post("/v1/checks", json=body), 401)
    assert_problem(await anonymous.post("/v1/checks", json=body, headers=bearer(token("consents:write"))), 403)
    assert_problem(await anonymous.post("/v1/checks/batch", json={"checks": [body]}, headers=bearer(token("consents:read"))), 403)
    assert (await anonymous.post("/v1/checks", json=body, headers=bearer(token("checks:read")))).status_code == 200


async def test_another_tenants_subject_is_unknown(client, anonymous, token, other_tenant):
    recorded = await record(client, {"email": "t@example.com"}, ("marketing", "email", "granted"))
    theirs = bearer(token("checks:read", tenant_key=other_tenant))
    for ref in ({"email": "t@example.com"}, {"subject_id": recorded["subject_id"]}):
        response = await anonymous.post("/v1/checks", json={"subject": ref, "purpose": "marketing", "channel": "email"}, headers=theirs)
        assert response.json()["reason"] == "unknown_subject"


async def test_another_tenants_purpose_is_not_found(client, anonymous, token, other_tenant):
    body = {"title": "Share with Acme", "legal_basis": "consent", "category": "sharing", "third_party": "Acme Ltd"}
    assert (await client.put("/v1/purposes/share_acme", json=body)).status_code == 200
    theirs = bearer(token("checks:read", tenant_key=other_tenant))
    check_body = {"subject": {"email": "t@example.com"}, "purpose": "share_acme"}
    assert_problem(await anonymous.post("/v1/checks", json=check_body, headers=theirs), 404)


async def test_a_purpose_change_is_seen_by_the_next_check(client):
    # The check reads its rule from the worker's cache, exact by the tenant's config version: no stale rule.
    subject = {"email": "changes@example.com"}
    body = {"title": "Offers", "legal_basis": "consent", "category": "marketing", "channels": ["email"]}
    assert_problem(await client.post("/v1/checks", json={"subject": subject, "purpose": "offers", "channel": "email"}), 404)
    assert (await client.put("/v1/purposes/offers", json=body)).status_code == 200
    assert (await check(client, subject, "offers", "email"))["reason"] == "unknown_subject"
    await record(client, subject, ("offers", "email", "granted"))
    assert (await check(client, subject, "offers", "email"))["reason"] == "consent_granted"
    assert_problem(await client.post("/v1/checks", json={"subject": subject, "purpose": "offers", "channel": "sms"}), 422)
    assert (await client.put("/v1/purposes/offers", json={**body, "channels": ["email", "sms"]})).status_code == 200
    assert (await check(client, subject, "offers", "sms"))["reason"] == "no_consent"
    assert (await client.put("/v1/purposes/offers", json={**body, "reconsent": True})).status_code == 200
    assert (await check(client, subject, "offers", "email"))["reason"] == "reconsent_required"


async def test_batch_in_order_and_equal_to_single_checks(client):
    b1 = await record(client, {"email": "b1@example.com"}, ("marketing", "email", "granted"), ("marketing", "sms", "withdrawn"))
    await record(client, {"phone": "+447911123458"}, ("profiling", None, "withdrawn"))
    checks = [
        {"subject": {"email": "b1@example.com"}, "purpose": "marketing", "channel": "email"},
        {"subject": {"email": "b1@example.com"}, "purpose": "marketing", "channel": "sms"},
        {"subject": {"email": "b1@example.com"}, "purpose": "marketing", "channel": "post"},
        {"subject": {"phone": "07911 123458"}, "purpose": "profiling"},
        {"subject": {"email": "b1@example.com"}, "purpose": "profiling"},
        {"subject": {"email": "stranger@example.com"}, "purpose": "marketing", "channel": "email"},
        {"subject": {"subject_id": b1["subject_id"]}, "purpose": "marketing", "channel": "email"},
        {"subject": {"subject_id": "00000000-0000-4000-8000-000000000000"}, "purpose": "marketing", "channel": "email"},
    ]
    response = await client.post("/v1/checks/batch", json={"checks": checks})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["reason"] for r in results] == [
        "consent_granted", "withdrawn", "no_consent", "objected", "legitimate_interest", "unknown_subject",
        "consent_granted", "unknown_subject",
    ]
    for item, result in zip(checks, results, strict=True):
        single = await check(client, item["subject"], item["purpose"], item.get("channel"))
        assert {k: v for k, v in single.items() if k != "checked_at"} == {k: v for k, v in result.items() if k != "checked_at"}


async def test_batch_of_ten_thousand(client):
    await record(client, {"email": "u5@example.com"}, ("marketing", "email", "granted"))
    checks = [{"subject": {"email": f"u{i}@example.com"}, "purpose": "marketing", "channel": "email"} for i in range(10_000)]
    response = await client.post("/v1/checks/batch", json={"checks": checks})
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 10_000
    assert [i for i, r in enumerate(results) if r["allowed"]] == [5]
    too_many = await client.post("/v1/checks/batch", json={"checks": checks + checks[:1]})
    assert_problem(too_many, 422)


async def test_batch_answers_each_item_and_errors_in_place(client):
    """One bad email in a batch of 10,000 no longer fails the other 9,999 (issue: the consent half, exact, 4)."""
    await record(client, {"email": "ok@example.com"}, ("marketing", "email", "granted"))
    checks = [
        {"subject": {"email": "ok@example.com"}, "purpose": "marketing", "channel": "email"},
        {"subject": {"email": "bad"}, "purpose": "marketing", "channel": "email"},
        {"subject": {"email": "ok@example.com"}, "purpose": "nope"},
        {"subject": {"email": "ok@example.com"}, "purpose": "market_research", "channel": "post"},
        {"subject": {"phone": "12"}, "purpose": "marketing", "channel": "sms"},
        {"subject": {"email": "ok@example.com"}, "purpose": "marketing"},
    ] + [{"subject": {"email": f"n{i}@example.com"}, "purpose": "marketing", "channel": "email"} for i in range(9_994)]
    response = await client.post("/v1/checks/batch", json={"checks": checks})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 10_000
    assert (results[0]["allowed"], results[0]["reason"]) == (True, "consent_granted")
    assert results[1] == {"error": "invalid email"}
    assert results[2] == {"error": "unknown purpose 'nope'"}
    assert results[3] == {"error": "purpose 'market_research' does not cover the channel 'post'"}
    assert results[4] == {"error": "invalid phone"}
    assert "needs a channel" in results[5]["error"]
    assert {r["reason"] for r in results[6:]} == {"unknown_subject"}


async def test_a_malformed_batch_is_still_a_422(client):
    two_refs = {"subject": {"email": "a@example.com", "phone": "+447911123456"}, "purpose": "marketing", "channel": "email"}
    assert_problem(await client.post("/v1/checks/batch", json={"checks": [two_refs]}), 422)
    assert_problem(await client.post("/v1/checks/batch", json={"checks": "nope"}), 422)
    too_many = [{"subject": {"email": "a@example.com"}, "purpose": "marketing", "channel": "email"}] * 10_001
    assert_problem(await client.post("/v1/checks/batch", json={"checks": too_many}), 422)
    empty = await client.post("/v1/checks/batch", json={"checks": []})
    assert (empty.status_code, empty.json()) == (200, {"results": []})
