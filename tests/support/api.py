"""Small request helpers shared by the tests."""

from datetime import datetime
from typing import Any

import httpx


def iso(moment: datetime) -> str:
    """An aware datetime as the API writes it (UTC, with Z)."""
    return moment.isoformat().replace("+00:00", "Z")


def consent_body(subject: dict, *decisions: tuple, **extra: Any) -> dict:
    """A POST /v1/consents body; decisions are (purpose, channel, status) tuples."""
    return {
        "subject": subject,
        "decisions": [{"purpose": p, "channel": c, "status": s} for p, c, s in decisions],
        **extra,
    }


async def record(client: httpx.AsyncClient, subject: dict, *decisions: tuple, **extra: Any) -> dict:
    response = await client.post("/v1/consents", json=consent_body(subject, *decisions, **extra))
    assert response.status_code == 201, response.text
    return response.json()


async def check(client: httpx.AsyncClient, subject: dict, purpose: str, channel: str | None = None) -> dict:
    response = await client.post("/v1/checks", json={"subject": subject, "purpose": purpose, "channel": channel})
    assert response.status_code == 200, response.text
    return response.json()
