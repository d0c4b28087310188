"""The audit export: every consent event of a period, streamed as NDJSON or CSV in constant memory.

Each row carries what is needed to check it without consentd: every field the event's hash covers, in the form
the hash covers it (services/ledger/chains.py, docs/audit.md), with its chain position, previous hash and hash.
"""

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from app.db import Database
from app.models import ConsentEvent
from app.models.base import table_of
from app.services.kit import snapshots
from app.services.ledger import CANONICAL_FIELDS, canonical_values, timestamp

# The canonical fields the hash covers, then the evidence itself (null once erased) and when it was erased.
FIELDS = ("seq", *CANONICAL_FIELDS, "evidence", "evidence_erased_at", "hash")
_CHUNK_ROWS = 1_000


def _row(row: Any) -> dict[str, Any]:
    evidence, erased_at = row["evidence"], row["evidence_erased_at"]
    return {
        "seq": row["seq"], **dict(zip(CANONICAL_FIELDS, canonical_values(row), strict=True)),
        "evidence": orjson.loads(evidence) if isinstance(evidence, str) else evidence,
        "evidence_erased_at": None if erased_at is None else timestamp(erased_at), "hash": row["hash"],
    }


async def _rows(
    database: Database, *, tenant: str, start: datetime, end: datetime, purpose: str | None, by: str = "captured_at"
) -> AsyncIterator[Any]:
    """The events whose `by` (captured_at or recorded_at) falls in [start, end), in that order then ledger order,
    read in one snapshot."""
    table = table_of(ConsentEvent)
    moment = table.c[by]
    query = sa.select(*(table.c[name] for name in FIELDS)).where(table.c.tenant_id == tenant, moment >= start, moment < end)
    if purpose is not None:
        query = query.where(table.c.purpose == purpose)
    async with snapshots.snapshot(database) as run:
        async for row in await run(query.order_by(moment, table.c.seq)):
            yield row


# A cell starting with one of these is run as a formula by spreadsheets (CSV injection, OWASP).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A CSV cell: null empty; text a spreadsheet would run as a formula written with a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


async def ndjson(database: Database, **period: Any) -> AsyncIterator[bytes]:
    """One JSON object a line."""
    lines: list[bytes] = []
    async for row in _rows(database, **period):
        lines.append(orjson.dumps(_row(row), option=orjson.OPT_SORT_KEYS))
        if len(lines) == _CHUNK_ROWS:
            yield b"\n".join(lines) + b"\n"
            lines = []
    if lines:
        yield b"\n".join(lines) + b"\n"


async def csv_rows(database: Database, **period: Any) -> AsyncIterator[bytes]:
    """A header, then one row an event; evidence is its JSON text, null an empty field, and a text cell a spreadsheet
    would run as a formula starts with an apostrophe (the NDJSON export is exact)."""
    buffer = io.StringIO()
    # CRLF (RFC 4180): the csv module then quotes a cell holding a bare CR as well as one holding LF.
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(FIELDS)
    count = 0
    async for row in _rows(database, **period):
        values = _row(row)
        if values["evidence"] is not None:
            values["evidence"] = orjson.dumps(values["evidence"], option=orjson.OPT_SORT_KEYS).decode()
        writer.writerow([_cell(values[name]) for name in FIELDS])
        count += 1
        if count % _CHUNK_ROWS == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()
