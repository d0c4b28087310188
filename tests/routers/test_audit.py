"""GET /v1/audit/events (export), /v1/audit/verify and /v1/audit/access-log."""

import csv
import io
import uuid

import orjson
import pytest
import sqlalchemy as sa

from app.services.ledger.chains import event_hash
from tests.conftest import assert_problem, bearer, stored_id
from tests.support.api import record

JANE = {"email": "jane@example.com"}
NOVEMBER = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}


async def _seed(client) -> list[dict]:
    events = []
    for day, (purpose, channel, status) in enumerate(
        [("marketing", "email", "granted"), ("marketing", "sms", "withdrawn"), ("cookies_analytics", None, "granted")], start=1
    ):
        body = await record(client, JANE, (purpose, channel, status), captured_at=f"2026-11-0{day}T09:00:00Z", evidence={"day": day})
        events += body["events"]
    await record(client, JANE, ("marketing", "email", "withdrawn"), captured_at="2026-10-15T09:00:00Z")
    return events


def _lines(response) -> list[dict]:
    return [orjson.loads(line) for line in response.content.splitlines()]


async def test_export_streams_the_period_as_ndjson_with_what_verifies_each_row(client):
    events = await _seed(client)
    response = await client.get("/v1/audit/events", params=NOVEMBER)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    rows = _lines(response)
    assert [r["event_id"] for r in rows] == [e["event_id"] for e in events]
    assert [r["captured_at"] for r in rows] == [f"2026-11-0{d}T09:00:00.000000Z" for d in (1, 2, 3)]
    assert rows[2]["channel"] is None and rows[0]["evidence"] == {"day": 1}
    for row in rows:
        # Anyone holding the export recomputes each hash from the row alone.
        assert event_hash(row) == row["hash"]
    chain = sorted(rows, key=lambda r: r["chain_index"])
    assert chain[1]["prev_hash"] == chain[0]["hash"] and chain[1]["prev_event_id"] == chain[0]["event_id"]


async def test_export_by_purpose_and_as_csv(client):
    await _seed(client)
    response = await client.get("/v1/audit/events", params={**NOVEMBER, "purpose": "marketing", "format": "csv"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["purpose"], r["channel"], r["status"]) for r in rows] == [
        ("marketing", "email", "granted"), ("marketing", "sms", "withdrawn")
    ]
    assert orjson.loads(rows[0]["evidence"]) == {"day": 1} and rows[0]["policy_version"] == ""


async def test_an_empty_period_exports_nothing(client):
    await _seed(client)
    response = await client.get("/v1/audit/events", params={"from": "2020-01-01T00:00:00Z", "to": "2020-02-01T00:00:00Z"})
    assert response.status_code == 200 and response.content == b""
    csv_response = await client.get("/v1/audit/events", params={"to": "2020-02-01T00:00:00Z", "format": "csv"})
    assert csv_response.text.splitlines()[0].startswith("seq,tenant_id,subject_id,chain_index")
    assert len(csv_response.text.splitlines()) == 1


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2026-12-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
        {"from": "yesterday"},
        {"to": "2026-11-01T00:00:00"},
        {"format": "xml"},
        {"purpose": "Not A Key"},
    ],
)
async def test_export_refuses_bad_input_and_logs_nothing(client, params):
    assert_problem(await client.get("/v1/audit/events", params=params), 422)
    assert (await client.get("/v1/audit/access-log")).json()["entries"] == []


async def test_audit_needs_the_audit_scope(client, token):
    reader = bearer(token("consents:read", "checks:read", "consents:write"))
    for path in ("/v1/audit/events", "/v1/audit/verify", "/v1/audit/access-log"):
        assert_problem(await client.get(path, headers=reader), 403)
        assert (await client.get(path, headers=bearer(token("audit:read")))).status_code == 200
    assert_problem(await client.get("/v1/audit/verify", headers={"Authorization": ""}), 401)


async def test_another_tenants_events_are_neither_exported_nor_verified(client, token, other_tenant):
    await _seed(client)
    other = bearer(token("audit:read", tenant_key=other_tenant))
    assert (await client.get("/v1/audit/events", params=NOVEMBER, headers=other)).content == b""
    verified = (await client.get("/v1/audit/verify", headers=other)).json()
    assert verified == {"ok": True, "checked": 0, "chains": 0, "erased": 0, "problems": [], "problems_total": 0, "checkpoint": None}


async def test_verify_reports_an_event_changed_behind_the_services_back(backend, client):
    events = await _seed(client)
    clean = (await client.get("/v1/audit/verify")).json()
    assert (clean["ok"], clean["checked"], clean["problems"]) == (True, 4, [])
    target = events[1]["event_id"]
    async with backend.database.engine.begin() as connection:
        key = stored_id(backend, target)
        await connection.execute(sa.text("UPDATE consent_events SET status = 'granted' WHERE event_id = :e"), {"e": key})
    tampered = (await client.get("/v1/audit/verify")).json()
    assert tampered["ok"] is False and tampered["checked"] == 4
    assert [(p["event_id"], p["problem"]) for p in tampered["problems"]] == [(target, "changed")]
    assert tampered["problems"][0]["subject_id"] == events[1]["subject_id"]


async def test_the_access_log_records_reads_and_exports_by_client(client, token):
    events = await _seed(client)
    subject = events[0]["subject_id"]
    crm = bearer(token("consents:read", client="crm-sync"))
    assert (await client.post("/v1/subjects/lookup", json=JANE, headers=crm)).status_code == 200
    assert (await client.get(f"/v1/subjects/{subject}", headers=crm)).status_code == 200
    assert (await client.get(f"/v1/subjects/{subject}/consents", params={"as_of": "2026-11-02T00:00:00Z"}, headers=crm)).status_code == 200
    assert (await client.get(f"/v1/subjects/{subject}/history", headers=crm)).status_code == 200
    auditor = bearer(token("audit:read", client="regulator"))
    assert (await client.get(f"/v1/events/{events[0]['event_id']}/receipt", headers=auditor)).status_code == 200
    assert (await client.get("/v1/audit/events", params={**NOVEMBER, "purpose": "marketing"}, headers=auditor)).status_code == 200
    # A read that finds nothing reads no one's data.
    assert_problem(await client.get(f"/v1/subjects/{uuid.uuid4()}", headers=crm), 404)

    entries = (await client.get("/v1/audit/access-log", headers=auditor)).json()["entries"]
    assert [(e["client"], e["action"], e["subject_id"]) for e in entries] == [
        ("crm-sync", "subject.lookup", subject),
        ("crm-sync", "subject.read", subject),
        ("crm-sync", "consents.read", subject),
        ("crm-sync", "history.read", subject),
        ("regulator", "receipt.read", subject),
        ("regulator", "events.export", None),
    ]
    assert entries[2]["detail"] == {"as_of": "2026-11-02T00:00:00+00:00"}
    assert entries[4]["detail"] == {"event_id": events[0]["event_id"]}
    assert entries[5]["detail"]["purpose"] == "marketing" and entries[5]["detail"]["format"] == "ndjson"
    assert entries[0]["at"] <= entries[-1]["at"]
    one = (await client.get("/v1/audit/access-log", params={"subject_id": subject, "limit": 2}, headers=auditor)).json()
    assert [e["action"] for e in one["entries"]] == ["subject.lookup", "subject.read"] and one["next_cursor"]
    rest = (await client.get("/v1/audit/access-log", params={"subject_id": subject, "cursor": one["next_cursor"]}, headers=auditor)).json()
    assert [e["action"] for e in rest["entries"]] == ["consents.read", "history.read", "receipt.read"]
    assert rest["next_cursor"] is None


async def test_the_access_log_is_of_the_callers_tenant_only(client, token, other_tenant):
    events = await _seed(client)
    await client.get(f"/v1/subjects/{events[0]['subject_id']}")
    other = bearer(token("audit:read", tenant_key=other_tenant))
    assert (await client.get("/v1/audit/access-log", headers=other)).json()["entries"] == []


async def test_the_access_log_cannot_be_written_through_the_api(client):
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        response = await client.request(method, "/v1/audit/access-log", json={"client": "me", "action": "subject.read"})
        assert response.status_code == 405, method
    assert (await client.get("/v1/audit/access-log")).json()["entries"] == []


async def test_the_database_refuses_to_change_the_access_log(backend, client):
    """Append-only below the API too: a raw UPDATE or DELETE fails, whoever sends it."""
    await client.get(f"/v1/subjects/{(await _seed(client))[0]['subject_id']}")
    for statement in ("UPDATE access_log SET client = 'nobody'", "DELETE FROM access_log"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            async with backend.database.engine.begin() as connection:
                await connection.execute(sa.text(statement))
    assert [e["client"] for e in (await client.get("/v1/audit/access-log")).json()["entries"]] == ["test-client"]


@pytest.mark.parametrize("params", [{"cursor": "bm90LWEtY3Vyc29y"}, {"limit": 0}, {"subject_id": "nope"}, {"from": "2026-01-01"}])
async def test_the_access_log_refuses_bad_input(client, params):
    assert_problem(await client.get("/v1/audit/access-log", params=params), 422)


async def test_verify_refuses_bad_input(client):
    assert_problem(await client.get("/v1/audit/verify", params={"incremental": "maybe"}), 422)
    # With no checkpoint taken yet, an incremental verification is a full one.
    await _seed(client)
    whole = (await client.get("/v1/audit/verify", params={"incremental": "true"})).json()
    assert (whole["ok"], whole["checked"], whole["checkpoint"]) == (True, 4, None)
