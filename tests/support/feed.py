"""Following GET /v1/changes the way a client would: page after page, always from next_cursor."""

import asyncio
import time
from collections.abc import Callable

import httpx


async def feed_page(http: httpx.AsyncClient, after: str | None, limit: int, **kwargs) -> dict:
    params: dict = {"limit": limit}
    if after is not None:
        params["after"] = after
    response = await http.get("/v1/changes", params=params, **kwargs)
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["next_cursor"], str) and body["next_cursor"]
    return body


async def follow(
    http: httpx.AsyncClient,
    after: str | None = None,
    *,
    limit: int = 3,
    until: Callable[[list[dict]], bool] = lambda changes: True,
    timeout: float = 10.0,  # noqa: ASYNC109 - a deadline checked between polls, failing with what the feed gave
    **kwargs,
) -> tuple[list[dict], str]:
    """Every change after `after`, until a page comes back empty and `until(changes)` holds.

    On PostgreSQL the feed holds back changes above the oldest transaction running anywhere in the cluster,
    so an empty page can mean "not yet": poll, briefly and boundedly.
    """
    changes: list[dict] = []
    cursor = after
    deadline = time.monotonic() + timeout
    while True:
        page = await feed_page(http, cursor, limit, **kwargs)
        assert len(page["changes"]) <= limit
        if page["changes"]:
            assert page["next_cursor"] == page["changes"][-1]["cursor"]
            changes += page["changes"]
        elif cursor is not None:
            assert page["next_cursor"] == cursor  # an empty page hands back the cursor it was given
        cursor = page["next_cursor"]
        if not page["changes"]:
            if until(changes):
                return changes, cursor
            assert time.monotonic() < deadline, f"the feed did not deliver what was expected; got {changes}"
            await asyncio.sleep(0.05)
