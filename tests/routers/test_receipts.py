"""GET /.well-known/jwks.json, GET /v1/events/{id}/receipt and POST /v1/checks?receipt=true: signed proof that
verifies offline with the published keys alone, and survives a key rotation."""

import base64
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jose import jws
from sqlalchemy import select
from sqlalchemy import text as sa_text

from app.main import create_app
from app.models import ConsentEvent
from app.security import SignatureError, verify_with_jwks
from tests.conftest import assert_problem, bearer, settings_for, stored_id
from tests.support.api import iso, record

CHECK = {"subject": {"email": "proof@example.com"}, "purpose": "marketing", "channel": "email"}
SHARING = {
    "title": "Sharing with Acme Insurance",
    "description": "We pass your contact details to Acme Insurance Ltd so that they can send you quotes.",
    "legal_basis": "consent",
    "category": "sharing",
    "third_party": "Acme Insurance Ltd",
    "lifespan_days": 730,
}


def b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def published_key(http: httpx.AsyncClient, token: str) -> dict:
    """The JWK of /.well-known/jwks.json that the token names."""
    kid = jws.get_unverified_header(token)["kid"]
    keys = (await http.get("/.well-known/jwks.json")).json()["keys"]
    return next(key for key in keys if key["kid"] == kid)


def without(document: dict, *keys: str) -> dict:
    return {key: value for key, value in document.items() if key not in keys}


async def test_jwks_is_public_and_cacheable(backend, anonymous):
    response = await anonymous.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    keys = response.json()["keys"]
    assert keys == backend.services.signer.jwks()["keys"]
    for key in keys:
        assert key["use"] == "sig" and key["kid"] and key["alg"] in ("ES256", "RS256")
        assert key["kty"] == ("EC" if key["alg"] == "ES256" else "RSA")
        assert not {"d", "p", "q", "dp", "dq", "qi"} & key.keys()  # public parts only


async def test_receipt_verifies_with_the_published_key_alone(client, anonymous, token, tenant):
    recorded = await record(
        client, {"email": "jane@example.com"}, ("marketing", "email", "granted"),
        policy_version="2022-05", collection_point="checkout-form", source="preference_centre",
        captured_at=iso(datetime(2026, 11, 20, 9, 30, tzinfo=UTC)),
    )
    event = recorded["events"][0]
    response = await anonymous.get(f"/v1/events/{event['event_id']}/receipt", headers=bearer(token("audit:read")))
    assert response.status_code == 200, response.text
    receipt = response.json()
    document = without(receipt, "jws")

    # python-jose with nothing but the published JWK.
    key = await published_key(anonymous, receipt["jws"])
    payload = json.loads(jws.verify(receipt["jws"], key, algorithms=[key["alg"]]))
    assert without(payload, "iss", "iat") == document
    assert payload["iss"] == "consentd" and abs(payload["iat"] - time.time()) < 60
    assert jws.get_unverified_header(receipt["jws"])["typ"] == "consent-receipt+jwt"
    # And with cryptography directly: the JWS signing input, the raw r||s signature as DER.
    header, body, signature = receipt["jws"].split(".")
    public = ec.EllipticCurvePublicNumbers(
        int.from_bytes(b64decode(key["x"]), "big"), int.from_bytes(b64decode(key["y"]), "big"), ec.SECP256R1()
    ).public_key()
    raw = b64decode(signature)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(der, f"{header}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    assert json.loads(b64decode(body)) == payload

    assert document == {
        "schema_version": "consentd-receipt/1",
        "conforms_to": "ISO/IEC TS 27560:2023",
        "record_id": event["event_id"],
        "pii_principal_id": recorded["subject_id"],
        "controller": {"id": tenant, "name": tenant},
        "jurisdiction": "GB",
        "purposes": [
            {
                "purpose_id": "marketing", "purpose_version": 1, "title": "Marketing messages",
                "description": document["purposes"][0]["description"], "category": "marketing",
                "lawful_basis": "consent", "channel": "email", "recipients": [],
            }
        ],
        "state": "given",
        "captured_at": "2026-11-20T09:30:00Z",
        "recorded_at": event["recorded_at"],
        "expires_at": "2027-11-20T09:30:00Z",  # the catalogue's marketing lasts 365 days
        "policy_version": "2022-05",
        "collection_point": "checkout-form",
        "collection_method": "api",
        "source": "preference_centre",
        "recorded_by": "test-client",
        "ledger_hash": document["ledger_hash"],
    }
    assert document["purposes"][0]["description"].startswith("Promotional mail")
    assert "jane@example.com" not in response.text


async def test_receipt_carries_the_ledger_hash(backend, client, tenant):
    recorded = await record(client, {"external_id": "H-1"}, ("profiling", None, "withdrawn"))
    event_id = recorded["events"][0]["event_id"]
    receipt = (await client.get(f"/v1/events/{event_id}/receipt")).json()
    async with backend.database.transaction() as session:
        row = (
            await session.execute(select(ConsentEvent.__table__).where(ConsentEvent.event_id == uuid.UUID(event_id)))
        ).mappings().one()
    assert len(receipt["ledger_hash"]) == 64 and receipt["ledger_hash"] == row["hash"]
    # A withdrawal (an objection, for legitimate interest) never expires; a channel-less purpose has no channel.
    assert (receipt["state"], receipt["expires_at"], receipt["purposes"][0]["channel"]) == ("withdrawn", None, None)
    assert receipt["purposes"][0]["lawful_basis"] == "legitimate_interest"


async def test_receipt_reads_the_purpose_as_it_was_when_consent_was_given(client):
    assert (await client.put("/v1/purposes/share_acme", json=SHARING)).status_code == 200
    recorded = await record(client, {"email": "share@example.com"}, ("share_acme", None, "granted"))
    changed = SHARING | {"title": "Sharing with Acme Group", "third_party": "Acme Group plc"}
    assert (await client.put("/v1/purposes/share_acme", json=changed)).json()["version"] == 2
    receipt = (await client.get(f"/v1/events/{recorded['events'][0]['event_id']}/receipt")).json()
    (purpose,) = receipt["purposes"]
    assert (purpose["purpose_version"], purpose["title"], purpose["recipients"]) == (1, SHARING["title"], ["Acme Insurance Ltd"])
    assert (purpose["category"], purpose["description"]) == ("sharing", SHARING["description"])
    captured = datetime.fromisoformat(receipt["captured_at"])
    assert receipt["expires_at"] == iso(captured + timedelta(days=730))


async def test_receipt_scopes_tenancy_and_bad_ids(client, anonymous, token, other_tenant):
    event_id = (await record(client, {"email": "s@example.com"}, ("marketing", "email", "granted")))["events"][0]["event_id"]
    path = f"/v1/events/{event_id}/receipt"
    assert_problem(await anonymous.get(path), 401)
    assert_problem(await anonymous.get(path, headers=bearer(token("consents:read", "checks:read"))), 403)
    assert (await client.get(path)).status_code == 200  # admin passes
    assert_problem(await anonymous.get(path, headers=bearer(token("audit:read", tenant_key=other_tenant))), 404)
    assert_problem(await client.get(f"/v1/events/{uuid.uuid4()}/receipt"), 404)
    assert_problem(await client.get("/v1/events/not-a-uuid/receipt"), 422)


async def test_check_receipt_is_the_signed_decision(client, anonymous, token, tenant):
    await record(client, CHECK["subject"], ("marketing", "email", "granted"), policy_version="2022-05")
    headers = bearer(token("checks:read", client="crm"))
    response = await anonymous.post("/v1/checks?receipt=true", json=CHECK, headers=headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    jwks = (await anonymous.get("/.well-known/jwks.json")).json()
    claims = verify_with_jwks(answer["receipt"], jwks, typ="check-receipt+jwt")
    assert without(claims, "tenant", "client", "iss", "iat", "jti") == without(answer, "receipt")
    assert (claims["tenant"], claims["client"], claims["iss"]) == (tenant, "crm", "consentd")
    assert claims["allowed"] is True and claims["consent"]["policy_version"] == "2022-05"
    uuid.UUID(claims["jti"])
    again = (await anonymous.post("/v1/checks?receipt=1", json=CHECK, headers=headers)).json()
    assert verify_with_jwks(again["receipt"], jwks)["jti"] != claims["jti"]
    # A receipt is not a consent receipt: the type is part of what verifies.
    with pytest.raises(SignatureError):
        verify_with_jwks(answer["receipt"], jwks, typ="consent-receipt+jwt")


async def test_check_without_receipt_is_unchanged(client):
    await record(client, CHECK["subject"], ("marketing", "email", "granted"))
    for query in ("", "?receipt=false", "?receipt=0", "?unrelated=1"):
        answer = (await client.post(f"/v1/checks{query}", json=CHECK)).json()
        assert "receipt" not in answer and answer["allowed"] is True, query
    batch = (await client.post("/v1/checks/batch?receipt=true", json={"checks": [CHECK]})).json()
    assert "receipt" not in batch and "receipt" not in batch["results"][0]


async def test_bad_receipt_flag_is_422(client, anonymous):
    for value in ("yes", "2", ""):
        body = assert_problem(await client.post(f"/v1/checks?receipt={value}", json=CHECK), 422)
        assert body["errors"][0]["loc"] == ["query", "receipt"], value
    # Authentication comes first, as on every other route.
    assert_problem(await anonymous.post("/v1/checks?receipt=yes", json=CHECK), 401)


def pem_file(tmp_path, name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / name
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(path)


async def test_receipts_survive_a_key_rotation(backend, tmp_path, token):
    """Signed with key A; the service restarts with key B active and A retired: A's receipt still verifies."""
    key_a, key_b = pem_file(tmp_path, "a.pem"), pem_file(tmp_path, "b.pem")
    admin = bearer(token("admin"))

    async def serve(**settings: object) -> tuple[dict, dict, dict]:
        """Start the app with these settings: a receipt of a new event, a check receipt, and the JWKS."""
        app = create_app(settings_for(backend.url, **settings))
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t", headers=admin) as http:
            recorded = await record(http, {"email": f"{uuid.uuid4().hex}@example.com"}, ("marketing", "email", "granted"))
            receipt = (await http.get(f"/v1/events/{recorded['events'][0]['event_id']}/receipt")).json()
            check = (await http.post("/v1/checks?receipt=true", json=CHECK)).json()
            return receipt, check, (await http.get("/.well-known/jwks.json")).json()

    old_receipt, old_check, old_jwks = await serve(signing_key=key_a)
    new_receipt, _, jwks = await serve(signing_key=key_b, signing_keys_retired=[key_a])
    assert len(old_jwks["keys"]) == 1 and [k["kid"] for k in jwks["keys"]][1] == old_jwks["keys"][0]["kid"]
    for token_ in (old_receipt["jws"], old_check["receipt"], new_receipt["jws"]):
        verify_with_jwks(token_, jwks)
    assert without(verify_with_jwks(old_receipt["jws"], jwks), "iss", "iat") == without(old_receipt, "jws")
    assert jws.get_unverified_header(new_receipt["jws"])["kid"] == jwks["keys"][0]["kid"]
    # Without A published, A's receipts no longer verify: the JWKS is what proves them.
    _, _, b_only = await serve(signing_key=key_b)
    with pytest.raises(SignatureError, match="no published key"):
        verify_with_jwks(old_receipt["jws"], b_only)


async def test_no_receipt_is_signed_for_an_event_altered_in_the_database(backend, client):
    """A receipt is proof: an event whose fields no longer give its hash gets a 409, not a signature."""
    recorded = await record(client, {"external_id": "T-1"}, ("marketing", "email", "withdrawn"))
    event_id = recorded["events"][0]["event_id"]
    async with backend.database.engine.begin() as connection:
        key = stored_id(backend, event_id)
        await connection.execute(sa_text("UPDATE consent_events SET status = 'granted' WHERE event_id = :e"), {"e": key})
    body = assert_problem(await client.get(f"/v1/events/{event_id}/receipt"), 409)
    assert "verify" in body["detail"]
