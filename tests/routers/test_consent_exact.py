"""The consent half made exact: what a careful user and an attacker found, each answered as the CONTRACT says.

Future-dated decisions, a sharing purpose's new recipient, material changes, contract and legal-obligation purposes.
"""

from datetime import UTC, datetime, timedelta

import orjson

from tests.conftest import assert_problem
from tests.routers.test_public_banner import ALL_ON, key, post_choices, standing, visitor  # noqa: F401 - fixtures
from tests.support.api import check, consent_body, iso, record

SHARING = {
    "title": "Sharing with our insurance partner",
    "description": "We pass your contact details to our partner so that they can send you quotes.",
    "legal_basis": "consent",
    "category": "sharing",
    "third_party": "Acme Insurance Ltd",
}


async def test_a_grant_dated_ahead_of_the_clock_cannot_outrank_a_later_withdrawal(client):
    """Item 1: a grant with captured_at = now + 290 s, then a withdrawal without captured_at, is withdrawn."""
    subject = {"email": "ahead@example.com"}
    ahead = datetime.now(UTC) + timedelta(seconds=290)
    granted = await record(client, subject, ("marketing", "email", "granted"), captured_at=iso(ahead))
    event = granted["events"][0]
    # Stored as the moment the server recorded it, not the client's clock.
    assert event["captured_at"] == event["recorded_at"]
    assert datetime.fromisoformat(event["captured_at"]) < ahead
    assert (await check(client, subject, "marketing", "email"))["allowed"] is True
    await record(client, subject, ("marketing", "email", "withdrawn"))
    answer = await check(client, subject, "marketing", "email")
    assert (answer["allowed"], answer["reason"]) == (False, "withdrawn")


async def test_a_decision_without_captured_at_is_captured_when_recorded(client):
    event = (await record(client, {"email": "now@example.com"}, ("marketing", "email", "granted")))["events"][0]
    assert event["captured_at"] == event["recorded_at"]


async def test_more_than_five_minutes_ahead_is_refused_and_nothing_stored(client):
    subject = {"email": "far@example.com"}
    far = iso(datetime.now(UTC) + timedelta(minutes=6))
    response = await client.post("/v1/consents", json=consent_body(subject, ("marketing", "email", "granted"), captured_at=far))
    assert assert_problem(response, 422)["errors"][0]["loc"] == ["body", "captured_at"]
    assert (await check(client, subject, "marketing", "email"))["reason"] == "unknown_subject"


async def test_an_import_dated_ahead_of_the_clock_is_stored_as_recorded(client):
    subject = {"email": "imported-ahead@example.com"}
    ahead = iso(datetime.now(UTC) + timedelta(seconds=200))
    line = orjson.dumps(consent_body(subject, ("marketing", "email", "granted"), captured_at=ahead))
    response = await client.post("/v1/consents/import", content=line, headers={"content-type": "application/x-ndjson"})
    assert response.status_code == 200, response.text
    await record(client, subject, ("marketing", "email", "withdrawn"))
    assert (await check(client, subject, "marketing", "email"))["reason"] == "withdrawn"
    sid = (await check(client, subject, "marketing", "email"))["subject_id"]
    history = (await client.get(f"/v1/subjects/{sid}/history")).json()["events"]
    assert history[0]["captured_at"] == history[0]["recorded_at"]


async def test_a_new_recipient_needs_consent_again_everywhere(client):
    """Item 2: consent to share with Acme never covers Beta Data Brokers."""
    assert (await client.put("/v1/purposes/share_partner", json=SHARING)).json()["consent_from_version"] == 1
    subject = {"email": "shared@example.com"}
    given = await record(client, subject, ("share_partner", None, "granted"))
    sid = given["subject_id"]
    assert (await check(client, subject, "share_partner"))["reason"] == "consent_granted"
    # A change that is not material keeps the consent.
    kept = (await client.put("/v1/purposes/share_partner", json=SHARING | {"description": "Quotes by post."})).json()
    assert (kept["version"], kept["consent_from_version"]) == (2, 1)
    assert (await check(client, subject, "share_partner"))["allowed"] is True

    moved = (await client.put("/v1/purposes/share_partner", json=SHARING | {"third_party": "Beta Data Brokers"})).json()
    assert (moved["version"], moved["consent_from_version"]) == (3, 3)
    assert "reconsent" not in moved
    answer = await check(client, subject, "share_partner")
    assert (answer["allowed"], answer["reason"]) == (False, "reconsent_required")
    batch = (await client.post("/v1/checks/batch", json={"checks": [{"subject": subject, "purpose": "share_partner"}]})).json()
    assert batch["results"][0]["reason"] == "reconsent_required"
    streamed = await client.post(
        "/v1/checks/stream", params={"purpose": "share_partner"}, content=b"email\nshared@example.com\n",
        headers={"content-type": "text/csv"},
    )
    assert orjson.loads(streamed.text.splitlines()[0])["reason"] == "reconsent_required"
    consents = (await client.get(f"/v1/subjects/{sid}/consents")).json()["consents"]
    assert [(c["purpose"], c["status"], c["effective"]) for c in consents] == [("share_partner", "granted", False)]

    # The person decides again under the new version: it counts.
    await record(client, subject, ("share_partner", None, "granted"))
    assert (await check(client, subject, "share_partner"))["reason"] == "consent_granted"


async def test_a_material_change_is_declared_with_reconsent(client):
    subject = {"email": "material@example.com"}
    await record(client, subject, ("marketing", "email", "granted"))
    body = (await client.get("/v1/purposes/marketing")).json()
    definition = {k: body[k] for k in ("title", "description", "legal_basis", "category", "channels", "lifespan_days")}
    changed = (await client.put("/v1/purposes/marketing", json=definition | {"reconsent": True})).json()
    # Material even with the same definition: a new version, from which consent must come.
    assert (changed["version"], changed["consent_from_version"]) == (body["version"] + 1, body["version"] + 1)
    assert (await check(client, subject, "marketing", "email"))["reason"] == "reconsent_required"
    # A withdrawal under the old version still stands as a withdrawal.
    await record(client, {"email": "out@example.com"}, ("marketing", "sms", "withdrawn"))
    assert (await check(client, {"email": "out@example.com"}, "marketing", "sms"))["reason"] == "withdrawn"


async def test_double_opt_in_is_refused_until_it_is_built(client):
    response = await client.put("/v1/purposes/newsletter", json=SHARING | {"third_party": None, "double_opt_in": True})
    assert assert_problem(response, 422)["errors"][0]["loc"] == ["body", "double_opt_in"]
    assert (await client.get("/v1/purposes/newsletter")).status_code == 404
    created = (await client.put("/v1/purposes/newsletter", json=SHARING | {"double_opt_in": False})).json()
    assert created["double_opt_in"] is False


async def test_a_tps_entry_does_not_stop_a_call_about_an_order(client):
    """Item 3: suppressions reach consent and legitimate-interest purposes only."""
    subject = {"phone": "07911 123458"}
    await record(client, subject, ("marketing", "phone", "granted"))
    suppressed = await client.put("/v1/suppressions", json={"entries": [subject], "channels": ["phone"], "reason": "tps"})
    assert suppressed.status_code == 200, suppressed.text
    assert (await check(client, subject, "marketing", "phone"))["reason"] == "suppressed"
    order = await check(client, subject, "order_updates", "phone")
    assert (order["allowed"], order["reason"], order["legal_basis"]) == (True, "contract", "contract")
    records = await check(client, subject, "legal_records")
    assert (records["allowed"], records["reason"]) == (True, "legal_obligation")
    # Someone consentd has never seen can still be told about their order.
    assert (await check(client, {"phone": "07911 123459"}, "order_updates", "sms"))["reason"] == "contract"


async def test_contract_and_legal_obligation_cannot_be_objected_to(client):
    subject = {"email": "object@example.com"}
    for purpose, channel in (("order_updates", "email"), ("legal_records", None)):
        response = await client.post("/v1/consents", json=consent_body(subject, (purpose, channel, "withdrawn")))
        assert assert_problem(response, 422)["errors"][0]["loc"] == ["body", "decisions", 0, "status"]
    assert (await check(client, subject, "order_updates", "email"))["subject_id"] is None  # nothing was stored
    line = orjson.dumps(consent_body(subject, ("order_updates", "post", "withdrawn")))
    imported = await client.post("/v1/consents/import", content=line, headers={"content-type": "application/x-ndjson"})
    assert assert_problem(imported, 422)["errors"][0]["loc"] == ["decisions", 0, "status"]
    # A legitimate-interest purpose can be objected to.
    await record(client, subject, ("profiling", None, "withdrawn"))
    assert (await check(client, subject, "profiling"))["reason"] == "objected"


async def test_the_banner_asks_again_after_a_material_change_of_a_category(client, visitor, key):
    """Item 2, banner status: a category changed with "reconsent": true reprompts; the fresh choice stands."""
    device = (await post_choices(visitor, key, None, ALL_ON))["device_id"]
    assert (await standing(visitor, key, device))["reprompt"] is False
    body = (await client.get("/v1/purposes/cookies_analytics")).json()
    definition = {k: body[k] for k in ("title", "description", "legal_basis", "category", "lifespan_days")}
    assert (await client.put("/v1/purposes/cookies_analytics", json=definition | {"reconsent": True})).status_code == 200
    asked = await standing(visitor, key, device)
    assert asked["reprompt"] is True and "cookies_analytics" not in asked["choices"]
    await post_choices(visitor, key, device, ALL_ON)
    assert (await standing(visitor, key, device))["reprompt"] is False
