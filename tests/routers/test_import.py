"""POST /v1/consents/import: NDJSON of consent records, all lines or none, idempotent per record."""

import asyncio
import json

import httpx
import pytest

from app.main import create_app
from tests.conftest import assert_problem, bearer, settings_for
from tests.support.api import check

NDJSON = {"content-type": "application/x-ndjson"}


def ndjson(*records: dict | str) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def rec(email: str, purpose: str = "marketing", channel: str | None = "email", status: str = "granted", **extra) -> dict:
    decision = {"purpose": purpose, "status": status} | ({"channel": channel} if channel else {})
    return {"subject": {"email": email}, "decisions": [decision], **extra}


async def do_import(client: httpx.AsyncClient, body: str, **headers) -> httpx.Response:
    return await client.post("/v1/consents/import", content=body, headers=NDJSON | headers)


async def history(client: httpx.AsyncClient, email: str) -> list[dict]:
    found = await client.post("/v1/subjects/lookup", json={"email": email})
    if found.status_code == 404:
        return []
    sid = found.json()["subject_id"]
    return (await client.get(f"/v1/subjects/{sid}/history", params={"limit": 1000})).json()["events"]


async def test_import_keeps_original_times_and_is_idempotent(client):
    body = ndjson(
        rec("ann@example.com", captured_at="2024-03-01T09:00:00Z", source="legacy-crm", policy_version="2024-01"),
        rec("bob@example.com", status="withdrawn", captured_at="2024-03-02T09:00:00Z", identifiers={"external_id": "B-1"}),
        rec("cat@example.com", purpose="profiling", channel=None, status="withdrawn", captured_at="2023-12-31T23:00:00Z"),
    )
    first = await do_import(client, body)
    assert first.status_code == 200, first.text
    assert first.json() == {"lines": 3, "imported": 3, "skipped": 0, "events": 3}

    ann = await history(client, "ann@example.com")
    assert [(e["captured_at"], e["source"], e["policy_version"]) for e in ann] == [
        ("2024-03-01T09:00:00Z", "legacy-crm", "2024-01")
    ]
    assert (await check(client, {"email": "ann@example.com"}, "marketing", "email"))["reason"] in {
        "consent_granted", "expired", "reconsent_required"
    }
    assert (await check(client, {"external_id": "B-1"}, "marketing", "email"))["reason"] == "withdrawn"
    assert (await check(client, {"email": "cat@example.com"}, "profiling"))["reason"] == "objected"

    again = await do_import(client, body)
    assert again.json() == {"lines": 3, "imported": 0, "skipped": 3, "events": 0}
    assert len(await history(client, "ann@example.com")) == 1


async def test_records_apply_in_captured_order_and_repeats_store_once(client):
    newer = rec("dan@example.com", status="withdrawn", captured_at="2025-06-01T00:00:00Z")
    older = rec("dan@example.com", status="granted", captured_at="2025-01-01T00:00:00Z")
    response = await do_import(client, ndjson(newer, older, newer, "", "  "))
    assert response.json() == {"lines": 3, "imported": 2, "skipped": 1, "events": 2}
    assert (await check(client, {"email": "dan@example.com"}, "marketing", "email"))["reason"] == "withdrawn"
    assert len(await history(client, "dan@example.com")) == 2


async def test_one_bad_line_stores_nothing_and_every_bad_line_is_listed(client):
    body = ndjson(
        rec("good1@example.com"),
        rec("not-an-email"),
        rec("good2@example.com"),
        "{not json",
        rec("good3@example.com", purpose="no_such_purpose"),
        rec("good4@example.com", channel=None),
        rec("good5@example.com", captured_at="2999-01-01T00:00:00Z"),
        {
            "subject": {"email": "x@example.com", "phone": "+447700900123"},
            "decisions": [{"purpose": "marketing", "channel": "email", "status": "granted"}],
        },
    )
    response = await do_import(client, body)
    problem = assert_problem(response, 422)
    assert sorted({e["line"] for e in problem["errors"]}) == [2, 4, 5, 6, 7, 8]
    assert all(e["msg"] for e in problem["errors"])
    assert "not-an-email" not in response.text  # input is not echoed
    assert await history(client, "good1@example.com") == []
    assert (await client.get("/v1/changes")).json()["changes"] == []
    # Nothing was remembered either: the good lines import once the bad ones are gone.
    fixed = await do_import(client, ndjson(rec("good1@example.com"), rec("good2@example.com")))
    assert fixed.json()["imported"] == 2


async def test_identifier_conflicts_and_unknown_subjects_fail_the_whole_request(client, other_client):
    await do_import(client, ndjson(rec("owner@example.com", identifiers={"external_id": "X-1"})))
    theirs = (await other_client.post("/v1/consents", json=rec("theirs@example.com"))).json()["subject_id"]
    body = ndjson(
        rec("new@example.com"),
        rec("thief@example.com", identifiers={"external_id": "X-1"}),
        {"subject": {"subject_id": theirs}, "decisions": [{"purpose": "marketing", "channel": "email", "status": "granted"}]},
    )
    problem = assert_problem(await do_import(client, body), 422)
    assert {(e["line"], e["msg"]) for e in problem["errors"]} == {
        (2, "that external_id belongs to another subject"), (3, "subject not found")
    }
    assert await history(client, "new@example.com") == []


async def test_lines_of_one_request_see_each_other(client):
    # As if written in turn: the second line names the subject the first one created by its external_id.
    body = ndjson(
        rec("eve@example.com", identifiers={"external_id": "E-9"}),
        {"subject": {"external_id": "E-9"}, "decisions": [{"purpose": "market_research", "channel": "phone", "status": "granted"}]},
    )
    assert (await do_import(client, body)).json()["imported"] == 2
    assert len(await history(client, "eve@example.com")) == 2


async def test_media_type_and_size_limits(client, backend):
    assert_problem(await client.post("/v1/consents/import", json=rec("a@example.com")), 415)
    too_big = "x" * (backend.settings.import_max_body_bytes + 1)
    assert_problem(await do_import(client, too_big), 413)
    empty = await do_import(client, "")
    assert empty.json() == {"lines": 0, "imported": 0, "skipped": 0, "events": 0}


async def test_line_cap(backend, token):
    app = create_app(settings_for(backend.url, import_max_lines=2))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://c", headers=bearer(token("admin"))) as http:
            body = ndjson(rec("l1@example.com"), rec("l2@example.com"), rec("l3@example.com"))
            problem = assert_problem(await do_import(http, body), 422)
            assert "at most 2 lines" in problem["detail"]
            assert await history(http, "l1@example.com") == []


async def test_scopes_and_tenants(backend, anonymous, token, client, other_client):
    body = ndjson(rec("scoped@example.com"))
    assert_problem(await do_import(anonymous, body), 401)
    assert_problem(await do_import(anonymous, body, **bearer(token("consents:read", "checks:read"))), 403)
    assert (await do_import(client, body)).json()["imported"] == 1
    # The same record in another tenant is another record: imported there, invisible here.
    assert (await do_import(other_client, body)).json()["imported"] == 1
    assert len(await history(client, "scoped@example.com")) == 1


async def test_concurrent_imports_of_one_file_store_it_once(pg_backend, client):
    body = ndjson(*(rec(f"race{i}@example.com", captured_at="2025-02-02T00:00:00Z") for i in range(200)))
    transport = httpx.ASGITransport(app=pg_backend.app)

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://c", headers=client.headers) as http:
            return await do_import(http, body)

    results = await asyncio.gather(*(send() for _ in range(4)), return_exceptions=True)
    ok = [r for r in results if isinstance(r, httpx.Response) and r.status_code == 200]
    # Racing creators of the same new people may be told to retry (409); none may store anything twice.
    assert all(isinstance(r, httpx.Response) and r.status_code in (200, 409) for r in results), results
    assert sum(r.json()["imported"] for r in ok) in (0, 200)
    retry = await do_import(client, body)
    assert sum(r.json()["imported"] for r in ok) + retry.json()["imported"] == 200
    for i in (0, 99, 199):
        assert len(await history(client, f"race{i}@example.com")) == 1


@pytest.fixture
async def other_client(backend, other_tenant, token):
    transport = httpx.ASGITransport(app=backend.app)
    headers = bearer(token("admin", tenant_key=other_tenant))
    async with httpx.AsyncClient(transport=transport, base_url="http://consentd.test", headers=headers) as http:
        yield http
