"""Operations: health, readiness, metrics, the committed OpenAPI document."""

import json
from pathlib import Path

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
