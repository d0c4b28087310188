"""Operations: health, readiness, metrics, the committed OpenAPI document."""

import json
from pathlib import Path

import httpx

from app.main import create_app
from tests.conftest import assert_problem, bearer, settings_for
from tests.support.api import check, record

COMMITTED = Path(__file__).parents[2] / "openapi" / "openapi.json"


async def test_health_and_readiness(anonymous):
    assert (await anonymous.get("/healthz")).json() == {"status": "ok"}
    assert (await anonymous.get("/readyz")).json() == {"status": "ready"}


async def test_metrics_count_decisions_and_latency(client, anonymous):
    await record(client, {"email": "m@example.com"}, ("marketing", "email", "granted"))
    await check(client, {"email": "m@example.com"}, "marketing", "email")
    text = (await anonymous.get("/metrics")).text
    assert 'consentd_check_decisions_total{allowed="true",reason="consent_granted"}' in text
    assert 'consentd_request_duration_seconds_bucket{le="0.005",method="POST",route="/v1/checks",status="200"}' in text
    assert "m@example.com" not in text


async def test_committed_openapi_matches_the_app(backend, anonymous):
    served = (await anonymous.get("/openapi.json")).json()
    assert json.loads(COMMITTED.read_text()) == served, "run `make openapi` and commit openapi/openapi.json"


async def test_metrics_token_is_required_when_set(sqlite_url):
    app = create_app(settings_for(sqlite_url, metrics_token="scrape-token-0123456789"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://consentd.test") as http:
        for headers in ({}, bearer("scrape-token-012345678"), bearer("scrape-token-0123456789x"),
                        {"Authorization": "Basic scrape-token-0123456789"}):
            assert_problem(await http.get("/metrics", headers=headers), 401)
        allowed = await http.get("/metrics", headers=bearer("scrape-token-0123456789"))
        assert allowed.status_code == 200 and "consentd_request_duration_seconds" in allowed.text
