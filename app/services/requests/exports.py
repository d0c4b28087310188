"""The export a completed access or portability request hands the person: one JSON document, streamed.

`access` (Art. 15): the person's identifiers, the decisions standing now, the full history with its evidence,
their requests, the legal holds on their data and the access-log entries about them. `portability` (Art. 20):
what they provided, machine-readable: their identifiers and the decisions they gave. The history is read a batch
at a time in one snapshot, so the document is written in constant memory however long it is.
"""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import sqlalchemy as sa

from app.db import Database
from app.models import AccessLogEntry, ConsentEvent, ConsentState, DataRequest, LegalHold, SubjectIdentifier
from app.models.base import table_of, utcnow
from app.services.kit import snapshots
from app.services.purposes import api_channel
from app.services.subjects import IdentifierKeys

_BATCH = 1_000
_EVENT_FIELDS = (
    "event_id", "purpose", "purpose_version", "channel", "status", "captured_at", "recorded_at", "source", "method",
    "policy_version", "collection_point", "actor", "evidence",
)
_GIVEN_FIELDS = ("purpose", "channel", "status", "captured_at", "source", "policy_version", "collection_point")


def _json(value: Any) -> bytes:
    # Timestamps as the API writes them (UTC, Z).
    return orjson.dumps(value, default=str, option=orjson.OPT_UTC_Z)


def _event(row: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    event = {name: row[name] for name in fields}
    event["channel"] = api_channel(event["channel"])
    if isinstance(event.get("evidence"), str):
        event["evidence"] = orjson.loads(event["evidence"])
    return event


async def document(database: Database, keys: IdentifierKeys, *, request: DataRequest) -> AsyncIterator[bytes]:
    """The export of `request` (a completed access or portability request), a piece at a time."""
    tenant, subject_id = request.tenant_id, request.subject_id
    head = {"request_id": str(request.id), "type": request.type, "exported_at": utcnow(), "subject_id": subject_id}
    yield _json(head)[:-1]
    if subject_id is None:
        yield b',"held":"nothing: consentd holds no data about this person"}'
        return
    portability = request.type == "portability"
    async with snapshots.snapshot(database) as run:
        identifiers = table_of(SubjectIdentifier)
        found = [
            {"type": row["type"], "value": keys.unseal(row["value_sealed"])}
            async for row in await run(
                sa.select(identifiers.c.type, identifiers.c.value_sealed)
                .where(identifiers.c.tenant_id == tenant, identifiers.c.subject_id == subject_id)
                .order_by(identifiers.c.type, identifiers.c.id_hash)
            )
        ]
        yield b',"identifiers":' + _json(found)
        events = table_of(ConsentEvent)
        fields = _GIVEN_FIELDS if portability else _EVENT_FIELDS
        if not portability:
            state = table_of(ConsentState)
            standing = [
                {"purpose": row["purpose"], "channel": api_channel(row["channel"]), "status": row["status"],
                 "captured_at": row["captured_at"], "event_id": row["event_id"]}
                async for row in await run(
                    sa.select(state).where(state.c.tenant_id == tenant, state.c.subject_id == subject_id)
                    .order_by(state.c.purpose, state.c.channel)
                )
            ]
            yield b',"consents":' + _json(standing)
        yield b',"decisions":[' if portability else b',"history":['
        batch: list[bytes] = []
        first = True
        async for row in await run(
            sa.select(*(events.c[name] for name in {*fields, "seq"}))
            .where(events.c.tenant_id == tenant, events.c.subject_id == subject_id)
            .order_by(events.c.captured_at, events.c.seq)
        ):
            batch.append(_json(_event(row, fields)))
            if len(batch) == _BATCH:
                yield (b"" if first else b",") + b",".join(batch)
                batch, first = [], False
        if batch:
            yield (b"" if first else b",") + b",".join(batch)
        yield b"]"
        if not portability:
            requests = table_of(DataRequest)
            theirs = [
                {"request_id": row["id"], "type": row["type"], "status": row["status"], "received_at": row["received_at"],
                 "due_at": row["extended_due_at"] or row["due_at"], "outcome": row["outcome"]}
                async for row in await run(
                    sa.select(requests).where(requests.c.tenant_id == tenant, requests.c.subject_id == subject_id)
                    .order_by(requests.c.received_at, requests.c.id)
                )
            ]
            yield b',"requests":' + _json(theirs)
            holds = table_of(LegalHold)
            held = [
                {"hold_id": row["id"], "reason": row["reason"], "note": row["note"], "until": row["until"],
                 "placed_at": row["placed_at"], "released_at": row["released_at"]}
                async for row in await run(
                    sa.select(holds).where(holds.c.tenant_id == tenant, holds.c.subject_id == subject_id)
                    .order_by(holds.c.placed_at, holds.c.id)
                )
            ]
            yield b',"holds":' + _json(held)
            log = table_of(AccessLogEntry)
            yield b',"access_log":['
            first = True
            async for row in await run(
                sa.select(log.c.at, log.c.client, log.c.action, log.c.detail)
                .where(log.c.tenant_id == tenant, log.c.subject_id == subject_id).order_by(log.c.at, log.c.seq)
            ):
                yield (b"" if first else b",") + _json(dict(row))
                first = False
            yield b"]"
    yield b"}"


def filename(request_id: uuid.UUID) -> str:
    return f"consentd-export-{request_id}.json"
