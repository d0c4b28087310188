"""PUT/GET /v1/purposes: versioning, validation, scopes, tenancy."""

import pytest
from sqlalchemy import select

from app.models import PurposeVersion
from tests.conftest import assert_problem, bearer

SHARING = {
    "title": "Sharing with Acme Insurance",
    "description": "We pass your contact details to Acme Insurance Ltd so that they can send you quotes.",
    "legal_basis": "consent",
    "category": "sharing",
    "channels": [],
    "third_party": "Acme Insurance Ltd",
    "lifespan_days": 730,
    "reconfirm_days": None,
}


async def test_put_creates_then_versions_on_change(backend, client, tenant):
    created = await client.put("/v1/purposes/share_acme", json=SHARING)
    assert created.status_code == 200, created.text
    assert created.json()["version"] == 1
    assert {k: created.json()[k] for k in SHARING} == SHARING
    same = await client.put("/v1/purposes/share_acme", json=SHARING)
    assert same.json()["version"] == 1
    changed = await client.put("/v1/purposes/share_acme", json=SHARING | {"lifespan_days": 365})
    assert changed.json()["version"] == 2
    fetched = (await client.get("/v1/purposes/share_acme")).json()
    assert (fetched["version"], fetched["lifespan_days"]) == (2, 365)
    async with backend.database.transaction() as session:
        versions = (
            await session.execute(
                select(PurposeVersion.version, PurposeVersion.definition)
                .where(PurposeVersion.tenant_id == tenant, PurposeVersion.key == "share_acme")
                .order_by(PurposeVersion.version)
            )
        ).all()
    assert [(v, d["lifespan_days"]) for v, d in versions] == [(1, 730), (2, 365)]


async def test_list_holds_the_default_catalogue(client):
    purposes = {p["key"]: p for p in (await client.get("/v1/purposes")).json()["purposes"]}
    assert set(purposes) == {
        "marketing", "market_research", "cookies_functional", "cookies_analytics", "cookies_advertising",
        "profiling", "call_recording", "sensitive_data", "order_updates", "legal_records",
    }
    assert purposes["order_updates"]["legal_basis"] == "contract"
    assert purposes["legal_records"]["legal_basis"] == "legal_obligation"
    assert purposes["marketing"]["channels"] == ["email", "sms", "phone", "post"]
    assert purposes["marketing"]["lifespan_days"] == 365
    assert purposes["profiling"]["legal_basis"] == "legitimate_interest"
    assert purposes["sensitive_data"]["reconfirm_days"] == 180
    assert purposes["cookies_analytics"]["category"] == "cookies"


@pytest.mark.parametrize(
    ("key", "body"),
    [
        ("Share", SHARING),
        ("x" * 65, SHARING),
        ("share_acme", SHARING | {"legal_basis": "whim"}),
        ("share_acme", SHARING | {"category": "spam"}),
        ("share_acme", SHARING | {"channels": ["email", "email"]}),
        ("share_acme", SHARING | {"channels": ["fax"]}),
        ("share_acme", SHARING | {"lifespan_days": 0}),
        ("share_acme", SHARING | {"reconfirm_days": 10**9}),
        ("share_acme", SHARING | {"title": ""}),
        ("share_acme", SHARING | {"title": "a\u0000b"}),
        ("share_acme", SHARING | {"title": "x" * 201}),
        ("share_acme", SHARING | {"colour": "red"}),
        ("share_acme", {k: v for k, v in SHARING.items() if k != "legal_basis"}),
        ("share_acme", SHARING | {"channels": "email"}),
    ],
)
async def test_bad_purposes_are_refused_and_not_stored(client, key, body):
    assert_problem(await client.put(f"/v1/purposes/{key}", json=body), 422)
    assert_problem(await client.get("/v1/purposes/share_acme"), 404)


async def test_scopes(anonymous, token):
    assert_problem(await anonymous.put("/v1/purposes/share_acme", json=SHARING), 401)
    for scopes in (("consents:write",), ("checks:read", "consents:read")):
        assert_problem(await anonymous.put("/v1/purposes/share_acme", json=SHARING, headers=bearer(token(*scopes))), 403)
    assert (await anonymous.put("/v1/purposes/share_acme", json=SHARING, headers=bearer(token("purposes:write")))).status_code == 200
    # Any scope may read.
    assert (await anonymous.get("/v1/purposes/share_acme", headers=bearer(token("checks:read")))).status_code == 200
    assert_problem(await anonymous.get("/v1/purposes"), 401)


async def test_another_tenants_purpose_is_invisible(client, anonymous, token, other_tenant):
    await client.put("/v1/purposes/share_acme", json=SHARING)
    theirs = bearer(token("admin", tenant_key=other_tenant))
    assert_problem(await anonymous.get("/v1/purposes/share_acme", headers=theirs), 404)
    keys = [p["key"] for p in (await anonymous.get("/v1/purposes", headers=theirs)).json()["purposes"]]
    assert "share_acme" not in keys
    # Their own purpose of the same key is theirs alone.
    await anonymous.put("/v1/purposes/share_acme", json=SHARING | {"third_party": "Other Ltd"}, headers=theirs)
    assert (await client.get("/v1/purposes/share_acme")).json()["third_party"] == "Acme Insurance Ltd"
