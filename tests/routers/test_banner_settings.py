"""GET and PUT /v1/banner: texts, privacy link, GPC coverage and the history of policy versions."""

import pytest

from tests.conftest import assert_problem, bearer


async def test_defaults_then_changes(client):
    initial = (await client.get("/v1/banner")).json()
    assert initial["policy_version"] == "1" and initial["texts"]["accept_all"] == "Accept all"
    assert [p["policy_version"] for p in initial["policies"]] == ["1"] and initial["gpc_purposes"] is None

    body = {
        "policy_version": "2026-12", "material": True, "privacy_policy_url": "https://shop.example/privacy",
        "texts": {"title": "Cookies at Example Shop", "accept_all": "Accept all cookies"},
        "gpc_purposes": ["cookies_advertising"],
    }
    changed = await client.put("/v1/banner", json=body)
    assert changed.status_code == 200, changed.text
    out = changed.json()
    assert out["texts"]["title"] == "Cookies at Example Shop" and out["texts"]["reject_all"] == "Reject all"
    assert [(p["policy_version"], p["material"]) for p in out["policies"]] == [("1", True), ("2026-12", True)]
    assert (await client.get("/v1/banner")).json() == out
    # The same version again only changes texts; an old version cannot come back.
    same = await client.put("/v1/banner", json={**body, "texts": {}})
    assert len(same.json()["policies"]) == 2 and same.json()["texts"]["title"] == "Cookies on this site"
    assert_problem(await client.put("/v1/banner", json={"policy_version": "1"}), 409)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"policy_version": ""},
        {"policy_version": "2", "material": "maybe"},
        {"policy_version": "2", "texts": {"unknown": "x"}},
        {"policy_version": "2", "texts": {"title": ""}},
        {"policy_version": "2", "privacy_policy_url": "ftp://shop.example/privacy"},
        {"policy_version": "2", "gpc_purposes": ["marketing"]},
        {"policy_version": "2", "gpc_purposes": ["no_such_purpose"]},
        {"policy_version": "2", "extra": True},
    ],
)
async def test_bad_input_changes_nothing(client, body):
    before = (await client.get("/v1/banner")).json()
    assert_problem(await client.put("/v1/banner", json=body), 422)
    assert (await client.get("/v1/banner")).json() == before


async def test_scopes_and_tenants(client, anonymous, token, other_tenant):
    assert_problem(await anonymous.get("/v1/banner"), 401)
    reader = bearer(token("checks:read"))
    assert (await anonymous.get("/v1/banner", headers=reader)).status_code == 200
    assert_problem(await anonymous.put("/v1/banner", json={"policy_version": "2"}, headers=reader), 403)
    writer = bearer(token("purposes:write"))
    assert (await anonymous.put("/v1/banner", json={"policy_version": "2"}, headers=writer)).status_code == 200
    # Another tenant's banner is untouched.
    other = bearer(token("admin", tenant_key=other_tenant))
    assert (await anonymous.get("/v1/banner", headers=other)).json()["policy_version"] == "1"
