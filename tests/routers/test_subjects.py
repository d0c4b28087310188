"""POST /v1/subjects/lookup and GET /v1/subjects/{id}."""

import uuid

from tests.conftest import assert_problem, bearer
from tests.support.api import record


async def test_lookup_and_get(client):
    recorded = await record(
        client, {"email": "Look@Example.com"}, ("marketing", "email", "granted"),
        identifiers={"phone": "+44 7911 123456", "external_id": "L-1", "device_id": "d-1"},
    )
    sid = recorded["subject_id"]
    for ref in ({"email": "look@example.com"}, {"phone": "07911123456"}, {"external_id": "L-1"},
                {"device_id": "d-1"}, {"subject_id": sid}):
        found = await client.post("/v1/subjects/lookup", json=ref)
        assert found.status_code == 200, ref
        assert found.json()["subject_id"] == sid
    subject = (await client.get(f"/v1/subjects/{sid}")).json()
    assert subject["flags"] == [] and subject["created_at"]
    assert {i["type"]: i["value"] for i in subject["identifiers"]} == {
        "email": "look@example.com", "phone": "+447911123456", "external_id": "L-1", "device_id": "d-1",
    }


async def test_unknown_and_bad_lookups(client):
    assert_problem(await client.post("/v1/subjects/lookup", json={"email": "none@example.com"}), 404)
    assert_problem(await client.get(f"/v1/subjects/{uuid.uuid4()}"), 404)
    assert_problem(await client.get("/v1/subjects/not-a-uuid"), 422)
    assert_problem(await client.post("/v1/subjects/lookup", json={"email": "nope"}), 422)
    assert_problem(await client.post("/v1/subjects/lookup", json={"phone": "12"}), 422)
    assert_problem(await client.post("/v1/subjects/lookup", json={}), 422)
    assert_problem(await client.post("/v1/subjects/lookup", json={"email": "a@example.com", "external_id": "x"}), 422)
    assert_problem(await client.post("/v1/subjects/lookup", json={"fingerprint": "x"}), 422)


async def test_identifiers_are_sealed_and_indexed_not_stored_in_clear(backend, client, tenant):
    from sqlalchemy import select

    from app.models import SubjectIdentifier

    await record(client, {"email": "secret@example.com"}, ("marketing", "email", "granted"))
    async with backend.database.transaction() as session:
        rows = (await session.execute(select(SubjectIdentifier).where(SubjectIdentifier.tenant_id == tenant))).scalars().all()
    assert rows and all("secret" not in r.value_sealed and "secret" not in r.id_hash for r in rows)


async def test_scopes_and_tenancy(client, anonymous, token, other_tenant):
    sid = (await record(client, {"email": "s@example.com"}, ("marketing", "email", "granted")))["subject_id"]
    assert_problem(await anonymous.get(f"/v1/subjects/{sid}"), 401)
    assert_problem(await anonymous.get(f"/v1/subjects/{sid}", headers=bearer(token("checks:read"))), 403)
    assert_problem(await anonymous.post("/v1/subjects/lookup", json={"email": "s@example.com"}, headers=bearer(token("checks:read"))), 403)
    assert (await anonymous.get(f"/v1/subjects/{sid}", headers=bearer(token("consents:read")))).status_code == 200
    theirs = bearer(token("consents:read", tenant_key=other_tenant))
    assert_problem(await anonymous.get(f"/v1/subjects/{sid}", headers=theirs), 404)
    assert_problem(await anonymous.post("/v1/subjects/lookup", json={"email": "s@example.com"}, headers=theirs), 404)
    assert_problem(await anonymous.post("/v1/subjects/lookup", json={"subject_id": sid}, headers=theirs), 404)
