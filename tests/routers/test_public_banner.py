"""The cookie banner's public endpoints: configuration, posting and reading a device's choices, GPC, CORS,
rate limits, body limits, and tenant isolation."""

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from app.main import create_app
from app.models import ConsentEvent
from app.services.banner import banners
from tests.conftest import Backend, assert_problem, settings_for
from tests.support.api import iso, record

SHOP = "https://shop.example"
CATEGORIES = ["cookies_advertising", "cookies_analytics", "cookies_functional"]
ALL_ON = {key: True for key in CATEGORIES}
ALL_OFF = {key: False for key in CATEGORIES}


async def new_key(backend: Backend, tenant: str, *origins: str) -> str:
    async with backend.database.transaction() as session:
        return await banners.create_key(session, tenant=tenant, origins=list(origins or [SHOP]))


@pytest.fixture
async def key(backend: Backend, tenant: str) -> str:
    return await new_key(backend, tenant)


@pytest.fixture
async def visitor(backend: Backend) -> httpx.AsyncClient:
    """A browser on a page of the shop: no token, the shop's Origin."""
    transport = httpx.ASGITransport(app=backend.app, client=("203.0.113.77", 50000))
    headers = {"Origin": SHOP, "User-Agent": "Mozilla/5.0 (test)"}
    async with httpx.AsyncClient(transport=transport, base_url="http://consentd.test", headers=headers) as http:
        yield http


def issued(backend: Backend, tenant: str) -> str:
    """A device id as consentd issues them to this tenant's banner, not yet used."""
    return backend.services.identifier_keys.new_device_id(tenant)


async def post_choices(visitor, key: str, device_id: str | None, choices: dict, status: int = 201, **extra) -> dict:
    """POST the choices; without a device id (a first visit) consentd issues one, in the answer."""
    headers = extra.pop("headers", {})
    body = {"choices": choices, "policy_version": "1", **extra} | ({"device_id": device_id} if device_id else {})
    response = await visitor.post("/v1/public/cookie-consents", params={"key": key}, json=body, headers=headers)
    assert response.status_code == status, response.text
    return response.json()


async def standing(visitor, key: str, device_id: str) -> dict:
    response = await visitor.get(f"/v1/public/cookie-consents/{device_id}", params={"key": key})
    assert response.status_code == 200, response.text
    return response.json()


async def device_events(backend: Backend, tenant: str) -> list[dict]:
    async with backend.database.transaction(read_only=True) as session:
        rows = await session.execute(
            sa.select(ConsentEvent.__table__).where(ConsentEvent.tenant_id == tenant).order_by(ConsentEvent.seq)
        )
        return [dict(row) for row in rows.mappings()]


async def test_banner_configuration(visitor, key):
    response = await visitor.get("/v1/public/banner", params={"key": key})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == SHOP
    assert "Origin" in response.headers["vary"]
    config = response.json()
    assert config["policy_version"] == "1"
    assert [c["key"] for c in config["categories"]] == CATEGORIES
    by_key = {c["key"]: c for c in config["categories"]}
    assert by_key["cookies_advertising"]["gpc"] is True and by_key["cookies_analytics"]["gpc"] is False
    assert by_key["cookies_advertising"]["consent_mode"] == ["ad_storage", "ad_user_data", "ad_personalization"]
    assert by_key["cookies_analytics"]["consent_mode"] == ["analytics_storage"]
    assert by_key["cookies_analytics"]["title"] == "Analytics cookies"
    assert config["texts"]["accept_all"] == "Accept all" and config["texts"]["reject_all"] == "Reject all"


async def test_a_new_device_is_asked(backend, tenant, visitor, key):
    assert await standing(visitor, key, issued(backend, tenant)) == {
        "choices": {}, "policy_version": None, "expires_at": None, "reprompt": True,
    }


async def test_accept_all_is_recorded_with_evidence_and_stands(backend, tenant, client, visitor, key):
    page = "https://shop.example/basket?email=jane%40example.com#top"
    answer = await post_choices(visitor, key, None, ALL_ON, page_url=page)
    device_id = answer.pop("device_id")
    assert answer["choices"] == ALL_ON and answer["reprompt"] is False and answer["policy_version"] == "1"
    assert {e["purpose"] for e in answer["events"]} == set(CATEGORIES)
    assert {(e["status"], e["method"]) for e in answer["events"]} == {("granted", "banner")}
    # The catalogue's cookie purposes last 365 days.
    assert datetime.fromisoformat(answer["expires_at"]) > datetime.now(UTC) + timedelta(days=364)
    assert await standing(visitor, key, device_id) == {k: v for k, v in answer.items() if k != "events"}

    subject = (await client.post("/v1/subjects/lookup", json={"device_id": device_id})).json()
    history = (await client.get(f"/v1/subjects/{subject['subject_id']}/history")).json()["events"]
    assert {(e["purpose"], e["status"], e["source"], e["policy_version"]) for e in history} == {
        (k, "granted", "cookie_banner", "1") for k in CATEGORIES
    }
    assert all(e["collection_point"] == "https://shop.example/basket" and e["method"] == "banner" for e in history)
    stored = await device_events(backend, tenant)
    assert stored[0]["evidence"] == {
        "ip_truncated": "203.0.113.0", "user_agent": "Mozilla/5.0 (test)", "page_url": "https://shop.example/basket",
        "gpc": False, "banner_key": key,
    }
    assert stored[0]["method"] == "banner" and stored[0]["actor"] == f"banner:{key[:11]}"
    # Checks for the device see the choices.
    check = await client.post("/v1/checks", json={"subject": {"device_id": device_id}, "purpose": "cookies_analytics"})
    assert check.json()["allowed"] is True


async def test_reject_all_is_a_withdrawal(client, visitor, key):
    answer = await post_choices(visitor, key, None, ALL_OFF)
    device_id = answer["device_id"]
    assert answer["choices"] == ALL_OFF and answer["reprompt"] is False and answer["expires_at"] is None
    check = await client.post("/v1/checks", json={"subject": {"device_id": device_id}, "purpose": "cookies_advertising"})
    assert check.json()["reason"] == "withdrawn"


async def test_a_later_choice_replaces_the_earlier(visitor, key):
    device_id = (await post_choices(visitor, key, None, ALL_ON))["device_id"]
    await post_choices(visitor, key, device_id, {**ALL_ON, "cookies_analytics": False})
    assert (await standing(visitor, key, device_id))["choices"] == {**ALL_ON, "cookies_analytics": False}


@pytest.mark.parametrize(
    ("choices", "advertising"),
    [
        ({"cookies_analytics": True, "cookies_functional": True}, ("withdrawn", "gpc")),  # not chosen: withdrawn
        ({**ALL_ON, "cookies_advertising": False}, ("withdrawn", "gpc")),  # turned off under GPC
        (ALL_ON, ("granted", "banner")),  # an explicit choice wins
    ],
)
async def test_gpc_withdraws_advertising_not_explicitly_on(visitor, key, choices, advertising):
    answer = await post_choices(visitor, key, None, choices, headers={"Sec-GPC": "1"})
    methods = {e["purpose"]: (e["status"], e["method"]) for e in answer["events"]}
    assert methods["cookies_advertising"] == advertising
    assert methods["cookies_analytics"] == ("granted", "banner")
    assert len(answer["events"]) == 3


async def test_gpc_alone_is_a_choice_but_nothing_else_is_empty(client, visitor, key):
    answer = await post_choices(visitor, key, None, {}, headers={"Sec-GPC": "1"})
    device_id = answer["device_id"]
    assert [(e["purpose"], e["status"], e["method"]) for e in answer["events"]] == [
        ("cookies_advertising", "withdrawn", "gpc")
    ]
    subject = (await client.post("/v1/subjects/lookup", json={"device_id": device_id})).json()
    history = (await client.get(f"/v1/subjects/{subject['subject_id']}/history")).json()["events"]
    assert [(e["purpose"], e["status"], e["method"]) for e in history] == [("cookies_advertising", "withdrawn", "gpc")]
    assert_problem(
        await visitor.post("/v1/public/cookie-consents", params={"key": key},
                           json={"device_id": device_id, "choices": {}, "policy_version": "1"}),
        422,
    )


async def test_gpc_coverage_can_be_set_per_tenant(client, visitor, key):
    response = await client.put("/v1/banner", json={"policy_version": "1", "gpc_purposes": ["cookies_analytics"]})
    assert response.status_code == 200, response.text
    config = (await visitor.get("/v1/public/banner", params={"key": key})).json()
    assert {c["key"] for c in config["categories"] if c["gpc"]} == {"cookies_analytics"}
    answer = await post_choices(visitor, key, None, {"cookies_advertising": True}, headers={"Sec-GPC": "1"})
    assert {(e["purpose"], e["method"]) for e in answer["events"]} == {
        ("cookies_advertising", "banner"), ("cookies_analytics", "gpc"),
    }


async def test_reprompt_after_a_material_policy_change_only(client, visitor, key):
    device_id = (await post_choices(visitor, key, None, ALL_ON))["device_id"]
    minor = await client.put("/v1/banner", json={"policy_version": "1.1", "material": False})
    assert minor.status_code == 200, minor.text
    assert (await standing(visitor, key, device_id))["reprompt"] is False
    major = await client.put("/v1/banner", json={"policy_version": "2", "material": True})
    assert [p["policy_version"] for p in major.json()["policies"]] == ["1", "1.1", "2"]
    assert (await standing(visitor, key, device_id))["reprompt"] is True
    # Chosen again under the new terms: settled.
    await post_choices(visitor, key, device_id, ALL_OFF, policy_version="2")
    assert (await standing(visitor, key, device_id)) | {"expires_at": None} == {
        "choices": ALL_OFF, "policy_version": "2", "expires_at": None, "reprompt": False,
    }


async def test_reprompt_for_a_new_category(client, visitor, key):
    device_id = (await post_choices(visitor, key, None, ALL_ON))["device_id"]
    response = await client.put(
        "/v1/purposes/cookies_social",
        json={"title": "Social media cookies", "legal_basis": "consent", "category": "cookies"},
    )
    assert response.status_code == 200
    state = await standing(visitor, key, device_id)
    assert state["reprompt"] is True and "cookies_social" not in state["choices"]


async def test_reprompt_when_a_choice_expired(backend, tenant, client, visitor, key):
    device_id = issued(backend, tenant)
    long_ago = datetime.now(UTC) - timedelta(days=400)
    await record(
        client, {"device_id": device_id}, *((k, None, "granted") for k in CATEGORIES),
        captured_at=iso(long_ago), source="cookie_banner", policy_version="1",
    )
    state = await standing(visitor, key, device_id)
    assert state["reprompt"] is True and state["choices"] == {}


async def test_idempotent_retry_stores_once(backend, tenant, visitor, key):
    device_id = issued(backend, tenant)
    retry = {"headers": {"Idempotency-Key": "choice-1"}}
    first = await post_choices(visitor, key, device_id, ALL_ON, **retry)
    again = await post_choices(visitor, key, device_id, ALL_ON, **retry)
    assert again == first
    assert len(await device_events(backend, tenant)) == 3
    await post_choices(visitor, key, device_id, ALL_OFF, status=409, **retry)


@pytest.mark.parametrize(
    "body",
    [
        {"device_id": "short", "choices": ALL_ON, "policy_version": "1"},
        {"device_id": "x" * 129, "choices": ALL_ON, "policy_version": "1"},
        {"device_id": "has spaces in it!!!!", "choices": ALL_ON, "policy_version": "1"},
        {"choices": {"cookies_analytics": "yes"}, "policy_version": "1"},
        {"choices": {"cookies_analytics": 1}, "policy_version": "1"},
        {"choices": {"marketing": True}, "policy_version": "1"},
        {"choices": {"no_such_purpose": True}, "policy_version": "1"},
        {"choices": {"Bad Key": True}, "policy_version": "1"},
        {"choices": ALL_ON, "policy_version": "9"},
        {"choices": ALL_ON},
        {"choices": ALL_ON, "policy_version": "1", "extra": 1},
        {"choices": ALL_ON, "policy_version": "1", "page_url": "javascript:alert(1)"},
        {"choices": [], "policy_version": "1"},
        [],
    ],
)
async def test_bad_input_is_a_422_and_stores_nothing(backend, tenant, visitor, key, body):
    response = await visitor.post("/v1/public/cookie-consents", params={"key": key}, json=body)
    problem = assert_problem(response, 422)
    assert problem["errors"]
    assert response.headers["access-control-allow-origin"] == SHOP  # the page may read why
    assert await device_events(backend, tenant) == []


async def test_malformed_and_oversized_bodies(backend, tenant, visitor, key):
    url = "/v1/public/cookie-consents"
    assert_problem(await visitor.post(url, params={"key": key}, content=b"{not json",
                                      headers={"Content-Type": "application/json"}), 422)
    big = {"choices": ALL_ON, "policy_version": "1", "page_url": "https://shop.example/" + "a" * 5000}
    assert_problem(await visitor.post(url, params={"key": key}, json=big), 413)
    assert_problem(await visitor.get("/v1/public/cookie-consents/short", params={"key": key}), 422)
    assert await device_events(backend, tenant) == []


async def test_keys_and_origins(backend, tenant, anonymous, visitor, key):
    url = "/v1/public/banner"
    assert_problem(await visitor.get(url), 401)
    assert_problem(await visitor.get(url, params={"key": "pk_unknown"}), 401)
    elsewhere = assert_problem(await visitor.get(url, params={"key": key}, headers={"Origin": "https://evil.example"}), 403)
    assert elsewhere["detail"]
    refused = await visitor.get(url, params={"key": key}, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in refused.headers
    # No Origin and no Referer: not a page of the shop.
    assert_problem(await anonymous.get(url, params={"key": key}), 403)
    # A same-origin GET sends no Origin, but its Referer names the page.
    by_referer = await anonymous.get(url, params={"key": key}, headers={"Referer": "https://shop.example/p/1?q=2"})
    assert by_referer.status_code == 200
    # A revoked key stops at once here (the tests remember keys for 0 seconds).
    async with backend.database.transaction() as session:
        assert await banners.revoke_key(session, key=key)
    assert_problem(await visitor.get(url, params={"key": key}), 401)


async def test_preflight(visitor, key):
    for path in ("/v1/public/cookie-consents", f"/v1/public/cookie-consents/{uuid.uuid4().hex}", "/v1/public/banner"):
        response = await visitor.options(
            path, params={"key": key},
            headers={"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,idempotency-key"},
        )
        assert response.status_code == 204, response.text
        assert response.headers["access-control-allow-origin"] == SHOP
        assert "POST" in response.headers["access-control-allow-methods"]
        assert {"content-type", "idempotency-key"} <= {
            h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
        }
        assert int(response.headers["access-control-max-age"]) > 0
    refused = await visitor.options("/v1/public/cookie-consents", params={"key": key}, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers


async def test_a_key_never_touches_another_tenant(backend, tenant, other_tenant, client, visitor, key):
    device_id = (await post_choices(visitor, key, None, ALL_ON))["device_id"]
    other_key = await new_key(backend, other_tenant)
    # The other tenant's banner refuses this tenant's device id (tests/routers/test_device_ids.py), and a device
    # of its own starts with nothing.
    other_device = (await post_choices(visitor, other_key, None, ALL_OFF))["device_id"]
    assert other_device != device_id
    # The other tenant's API does not know this tenant's device; this tenant's does.
    other = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=backend.app), base_url="http://consentd.test",
        headers={"Authorization": f"Bearer {_token(backend, other_tenant)}"},
    )
    async with other:
        assert_problem(await other.post("/v1/subjects/lookup", json={"device_id": device_id}), 404)
        assert (await other.post("/v1/subjects/lookup", json={"device_id": other_device})).status_code == 200
    assert (await client.post("/v1/subjects/lookup", json={"device_id": device_id})).status_code == 200
    assert_problem(await client.post("/v1/subjects/lookup", json={"device_id": other_device}), 404)
    # Writing through the other tenant's key touched only its own ledger.
    assert (await standing(visitor, key, device_id))["choices"] == ALL_ON
    assert (await standing(visitor, other_key, other_device))["choices"] == ALL_OFF


def _token(backend: Backend, tenant: str) -> str:
    from app.security import mint_token

    return mint_token(backend.settings, tenant=tenant, scopes=["admin"], ttl=60, client="other")


async def test_rate_limits_per_address_and_per_key(backend, tenant):
    key, second_key = await new_key(backend, tenant), await new_key(backend, tenant)
    for overrides, limited_by in (
        ({"public_rate_per_ip": "3/minute"}, "address"),
        ({"public_rate_per_key": "3/minute"}, "key"),
    ):
        app = create_app(settings_for(backend.url, **overrides))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 1))
            async with httpx.AsyncClient(transport=transport, base_url="http://t", headers={"Origin": SHOP}) as http:
                answers = [await http.get("/v1/public/banner", params={"key": key}) for _ in range(4)]
                assert [a.status_code for a in answers] == [200, 200, 200, 429]
                problem = assert_problem(answers[-1], 429)
                assert limited_by in problem["detail"]
                assert 1 <= int(answers[-1].headers["retry-after"]) <= 60
                other_key = await http.get("/v1/public/banner", params={"key": second_key})
                assert other_key.status_code == (429 if limited_by == "address" else 200)


async def test_banner_script(anonymous):
    response = await anonymous.get("/v1/public/banner.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert len(response.content) < 15 * 1024
    assert b"gtag" in response.content and b"data-category" in response.content
    again = await anonymous.get("/v1/public/banner.js", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304


async def test_demo_page(backend, anonymous):
    from app.services import tenants
    from app.services.purposes import catalogue

    async with backend.database.transaction() as session:
        await tenants.ensure(session, key="demo", name="Demo shop")
        await catalogue.load(session, tenant="demo", entries=catalogue.default())
        for stale in await banners.list_keys(session, tenant="demo"):
            await banners.revoke_key(session, key=stale.key)
    missing = await anonymous.get("/demo")
    assert missing.status_code == 404 and "banner-keys create --tenant demo --origin http://consentd.test" in missing.text
    demo_key = await new_key(backend, "demo", "http://consentd.test")
    page = await anonymous.get("/demo")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert f'data-key="{demo_key}"' in page.text and "/v1/public/banner.js" in page.text


async def test_banner_views_are_cached_and_dropped_on_change(backend, tenant, token, key):
    """With a cache (the default 5 s), a change through this process shows at once; through another, after it."""
    app = create_app(settings_for(backend.url, banner_key_cache_seconds=60))
    admin = {"Authorization": f"Bearer {token('admin')}"}
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        async def version() -> str:
            response = await http.get("/v1/public/banner", params={"key": key}, headers={"Origin": SHOP})
            return response.json()["policy_version"]

        assert await version() == "1"
        assert (await http.put("/v1/banner", json={"policy_version": "2"}, headers=admin)).status_code == 200
        assert await version() == "2"
        # Changed through another process (the shared test app): this one still shows what it cached.
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=backend.app), base_url="http://t") as other:
            assert (await other.put("/v1/banner", json={"policy_version": "3"}, headers=admin)).status_code == 200
        assert await version() == "2"
        # A new cookie purpose through this process is a new category at once.
        purpose = {"title": "Social media cookies", "legal_basis": "consent", "category": "cookies"}
        assert (await http.put("/v1/purposes/cookies_social", json=purpose, headers=admin)).status_code == 200
        response = await http.get("/v1/public/banner", params={"key": key}, headers={"Origin": SHOP})
        assert response.json()["policy_version"] == "3"
        assert "cookies_social" in {c["key"] for c in response.json()["categories"]}


async def test_a_first_choice_is_checked_against_the_banner_another_worker_changed(backend, tenant, token, key):
    """This worker holds the banner as it was; a change made through another (the shared test app) is what the next
    new device's choices are checked against, never the held one (on PostgreSQL the write is fenced on the
    config version it was checked at)."""
    app = create_app(settings_for(backend.url))
    admin = {"Authorization": f"Bearer {token('admin')}"}
    other_worker = httpx.AsyncClient(transport=httpx.ASGITransport(app=backend.app), base_url="http://t")
    transport = httpx.ASGITransport(app=app, client=("203.0.113.78", 50000))
    async with app.router.lifespan_context(app), other_worker, httpx.AsyncClient(
        transport=transport, base_url="http://t", headers={"Origin": SHOP}
    ) as here:
        await post_choices(here, key, None, ALL_ON)  # this worker now holds the banner as of policy "1"
        assert (await other_worker.put("/v1/banner", json={"policy_version": "2"}, headers=admin)).status_code == 200
        assert (await post_choices(here, key, None, ALL_ON, policy_version="2"))["policy_version"] == "2"
        purpose = {"title": "Social media cookies", "legal_basis": "consent", "category": "cookies"}
        assert (await other_worker.put("/v1/purposes/cookies_social", json=purpose, headers=admin)).status_code == 200
        answer = await post_choices(here, key, None, {"cookies_social": True}, policy_version="2")
        assert [(e["purpose"], e["status"]) for e in answer["events"]] == [("cookies_social", "granted")]
        # A change that leaves the choices valid: the write fenced on the held version is made again on the new.
        renamed = {"title": "Analytics cookies, renamed", "legal_basis": "consent", "category": "cookies"}
        changed = await other_worker.put("/v1/purposes/cookies_analytics", json=renamed, headers=admin)
        assert changed.status_code == 200, changed.text
        answer = await post_choices(here, key, None, {"cookies_analytics": True}, policy_version="2")
        async with backend.database.transaction() as session:
            version = (await session.execute(
                sa.select(ConsentEvent.purpose_version).where(ConsentEvent.event_id == uuid.UUID(answer["events"][0]["event_id"]))
            )).scalar_one()
        assert version == changed.json()["version"]
        # What the banner does not offer is still refused, and nothing is stored for it.
        refused = await here.post(
            "/v1/public/cookie-consents", params={"key": key},
            json={"choices": {"cookies_unknown": True}, "policy_version": "2"},
        )
        assert_problem(refused, 422)
    async with backend.database.transaction() as session:
        events = (await session.execute(
            sa.select(ConsentEvent.purpose).where(ConsentEvent.tenant_id == tenant)
        )).scalars().all()
    assert sorted(events) == sorted([*CATEGORIES, *CATEGORIES, "cookies_social", "cookies_analytics"])
