"""Response headers: nosniff on every response; no-store on every answer that carries personal data."""

import httpx

from app.main import DOCS_ASSETS, create_app
from tests.conftest import Backend, TokenFactory, assert_problem, settings_for
from tests.routers.test_public_banner import SHOP, new_key
from tests.support.api import record

JANE = {"email": "jane.headers@example.com"}
CHECK = {"subject": JANE, "purpose": "marketing", "channel": "email"}


def assert_nosniff(response: httpx.Response) -> None:
    assert response.headers.get_list("x-content-type-options") == ["nosniff"], (response.url, response.headers)


def assert_no_store(response: httpx.Response) -> None:
    assert response.headers.get("cache-control") == "no-store", (response.url, response.status_code, response.headers)


async def test_every_response_is_nosniff(client: httpx.AsyncClient, anonymous: httpx.AsyncClient):
    responses = [
        await anonymous.get("/healthz"),
        await anonymous.get("/readyz"),
        await anonymous.get("/metrics"),
        await anonymous.get("/openapi.json"),
        await anonymous.get("/docs"),
        await anonymous.get(f"{DOCS_ASSETS}/swagger-ui-bundle.js"),
        await anonymous.get(f"{DOCS_ASSETS}/swagger-ui.css"),
        await anonymous.get("/v1/public/banner.js"),
        await anonymous.get("/.well-known/jwks.json"),
        await anonymous.get("/nowhere"),
        await anonymous.delete("/healthz"),
        await anonymous.post("/v1/checks", json=CHECK),
        await client.post("/v1/checks", json={"subject": {"email": "not an email"}, "purpose": "marketing"}),
        await client.post("/v1/checks", content=b"x" * 2_000_000, headers={"content-type": "application/json"}),
        await client.post("/v1/checks/stream", params={"purpose": "marketing", "channel": "email"}, content=b"email\njane@example.com\n",
                          headers={"content-type": "text/csv"}),
        await anonymous.get("/v1/public/banner"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200, 200, 200, 200, 200, 404, 405, 401, 422,
                                                 413, 200, 401]
    for response in responses:
        assert_nosniff(response)


async def test_an_unexpected_error_is_nosniff_too(backend: Backend):
    # Starlette answers an unhandled exception from its outermost layer, outside every middleware of the app.
    app = create_app(settings_for(backend.url))

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://consentd.test") as http:
        response = await http.get("/v1/boom")
    assert_problem(response, 500)
    assert_nosniff(response)


async def test_answers_with_personal_data_are_no_store(backend: Backend, tenant: str, client: httpx.AsyncClient,
                                                       token: TokenFactory):
    recorded = await record(client, JANE, ("marketing", "email", "granted"))
    subject_id, event_id = recorded["subject_id"], recorded["events"][0]["event_id"]
    responses = [
        await client.post("/v1/consents", json={"subject": JANE, "decisions": [
            {"purpose": "marketing", "channel": "sms", "status": "withdrawn"}]}),
        await client.post("/v1/checks", json=CHECK),
        await client.post("/v1/checks", params={"receipt": "true"}, json=CHECK),
        await client.post("/v1/checks/batch", json={"checks": [CHECK]}),
        await client.post("/v1/checks/stream", params={"purpose": "marketing", "channel": "email"},
                          content=b"email\njane.headers@example.com\n", headers={"content-type": "text/csv"}),
        await client.post("/v1/subjects/lookup", json=JANE),
        await client.get(f"/v1/subjects/{subject_id}"),
        await client.get(f"/v1/subjects/{subject_id}/consents"),
        await client.get(f"/v1/subjects/{subject_id}/history"),
        await client.get("/v1/changes"),
        await client.put("/v1/suppressions", json={"entries": [{"email": "gone@example.com"}], "channels": ["email"],
                                                   "reason": "bounce"}),
        await client.get("/v1/suppressions"),
        await client.get("/v1/audit/events", params={"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}),
        await client.get("/v1/audit/verify"),
        await client.get("/v1/audit/access-log"),
        await client.get(f"/v1/events/{event_id}/receipt"),
        await client.get("/v1/purposes"),
        # Errors under /v1/ too: a 404 says whether a subject exists.
        await client.post("/v1/subjects/lookup", json={"email": "nobody@example.com"}),
        await client.delete("/v1/checks"),
    ]
    assert [r.status_code for r in responses][:-2] == [201] + [200] * 16, [(r.url, r.status_code) for r in responses]
    assert [r.status_code for r in responses][-2:] == [404, 405]
    for response in responses:
        assert_no_store(response)
        assert_nosniff(response)

    key = await new_key(backend, tenant)
    transport = httpx.ASGITransport(app=backend.app, client=("203.0.113.78", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://consentd.test", headers={"Origin": SHOP}) as visitor:
        # A first visit: consentd issues the device id.
        posted = await visitor.post("/v1/public/cookie-consents", params={"key": key},
                                    json={"choices": {"cookies_analytics": True}, "policy_version": "1"})
        device_id = posted.json()["device_id"]
        standing = await visitor.get(f"/v1/public/cookie-consents/{device_id}", params={"key": key})
        config = await visitor.get("/v1/public/banner", params={"key": key})
    assert [posted.status_code, standing.status_code, config.status_code] == [201, 200, 200]
    for response in (posted, standing, config):
        assert_no_store(response)
        assert_nosniff(response)


async def test_the_banner_script_and_the_public_keys_stay_cacheable(anonymous: httpx.AsyncClient):
    for path in ("/v1/public/banner.js", "/.well-known/jwks.json"):
        response = await anonymous.get(path)
        assert response.headers["cache-control"] == "public, max-age=300", path
        assert_nosniff(response)
