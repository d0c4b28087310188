"""The audit export by recorded_at, CSV cells a spreadsheet would run, and cursors that decode to the wrong type."""

import csv
import io
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from app.services.kit.cursors import pack
from tests.conftest import assert_problem
from tests.support.api import consent_body, iso, record


async def test_the_export_by_recorded_at_finds_what_was_imported_today(client):
    """Item 6: an import with old timestamps is in no export of today's captures, but is in today's by recorded_at."""
    line = orjson.dumps(
        consent_body({"email": "legacy@example.com"}, ("marketing", "email", "granted"), captured_at="2019-03-01T09:00:00Z")
    )
    assert (await client.post("/v1/consents/import", content=line, headers={"content-type": "application/x-ndjson"})).status_code == 200
    today = {"from": iso(datetime.now(UTC) - timedelta(hours=1)), "to": iso(datetime.now(UTC) + timedelta(minutes=1))}
    by_capture = await client.get("/v1/audit/events", params=today)
    assert by_capture.status_code == 200 and by_capture.text == ""
    by_recording = await client.get("/v1/audit/events", params={**today, "by": "recorded_at"})
    rows = [orjson.loads(row) for row in by_recording.text.splitlines()]
    assert [(r["captured_at"], r["method"]) for r in rows] == [("2019-03-01T09:00:00.000000Z", "import")]
    assert_problem(await client.get("/v1/audit/events", params={**today, "by": "seq"}), 422)


@pytest.mark.parametrize("value", ["=HYPERLINK(\"http://evil.example\")", "+1+2", "-2+3", "@SUM(A1)", "\tx", "\rx"])
async def test_csv_cells_that_would_run_as_formulas_are_escaped(client, value):
    """Item 10: formula injection; the NDJSON export stays exact."""
    await record(client, {"email": "f@example.com"}, ("marketing", "email", "granted"), source=value[:64], collection_point=value)
    period = {"from": "2020-01-01T00:00:00Z"}
    rows = list(csv.DictReader(io.StringIO((await client.get("/v1/audit/events", params={**period, "format": "csv"})).text)))
    assert (rows[0]["source"], rows[0]["collection_point"]) == ("'" + value[:64], "'" + value)
    exact = orjson.loads((await client.get("/v1/audit/events", params=period)).text.splitlines()[0])
    assert (exact["source"], exact["collection_point"]) == (value[:64], value)


def _cursor(value: object) -> str:
    return pack(orjson.dumps(value))


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor(["2024-01-01T00:00:00+00:00", True]),
        _cursor(["2024-01-01T00:00:00+00:00", False]),
        _cursor(["2024-01-01T00:00:00+00:00", 1.5]),
        _cursor([True, 1]),
        _cursor({"at": 1}),
        pack(b"\xff\xfe"),
    ],
)
async def test_cursors_of_the_wrong_type_are_a_422(client, cursor):
    """Item 9: a cursor whose sequence is `true` was a 500 (bool is an int in Python)."""
    sid = (await record(client, {"email": "cur@example.com"}, ("marketing", "email", "granted")))["subject_id"]
    assert_problem(await client.get(f"/v1/subjects/{sid}/history", params={"cursor": cursor}), 422)
    assert_problem(await client.get("/v1/audit/access-log", params={"cursor": cursor}), 422)


@pytest.mark.parametrize("raw", [b"+1.2", b" 1.2", b"1_0.2", b"1.2.3", b"True.1", b""])
async def test_change_feed_cursors_are_exactly_what_it_wrote(client, raw):
    assert_problem(await client.get("/v1/changes", params={"after": pack(raw) or "AA"}), 422)
