"""Bulk import of consent records from a legacy system: NDJSON of `POST /v1/consents` bodies.

A request (or a CLI chunk) is all or nothing. Each record is remembered by a digest of its meaning, so an
import that is run again after an interruption skips what it already stored and stores nothing twice.
"""

import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import AppError, Unprocessable
from app.models import ImportedRecord
from app.models.base import utcnow
from app.models.consents import ConsentRecordIn, ImportResult
from app.services import consents, pg_bulk, purposes, subjects
from app.services.decision import storage_channel
from app.services.identifiers import IdentifierKeys
from app.services.sql import is_postgres, upsert

# At most this many errors are listed per line: enough to fix it, bounded for a line full of mistakes.
ERRORS_PER_LINE = 5


@dataclass
class _Record:
    line: int
    body: ConsentRecordIn
    digest: str
    channels: list[str]
    naming: subjects.Naming


def _error(line: int, loc: list, msg: str) -> dict[str, Any]:
    return {"line": line, "loc": loc, "msg": msg}


def _parse(lines: list[tuple[int, bytes]]) -> tuple[list[tuple[int, ConsentRecordIn]], list[dict]]:
    parsed, errors = [], []
    for number, line in lines:
        try:
            parsed.append((number, ConsentRecordIn.model_validate_json(line)))
        except ValidationError as exc:
            issues = exc.errors(include_url=False, include_input=False)[:ERRORS_PER_LINE]
            errors += [_error(number, list(issue["loc"]), issue["msg"]) for issue in issues]
    return parsed, errors


async def prepare(
    session: AsyncSession, keys: IdentifierKeys, *, tenant: str, lines: list[tuple[int, bytes]]
) -> tuple[list[_Record], int]:
    """Validate every line (JSON, purposes, channels, identifiers) without writing; the records and the count
    of lines repeated within `lines`. Unprocessable lists every bad line."""
    parsed, errors = _parse(lines)
    rules = await purposes.rules(session, tenant=tenant, keys={d.purpose for _, body in parsed for d in body.decisions})
    records: list[_Record] = []
    seen: set[str] = set()
    repeated = 0
    latest = utcnow() + consents.MAX_CLOCK_SKEW
    for number, body in parsed:
        problems: list[dict] = []
        channels = []
        for index, decision in enumerate(body.decisions):
            loc = ["decisions", index]
            rule = rules.get(decision.purpose)
            if rule is None:
                problems.append(_error(number, [*loc, "purpose"], f"unknown purpose '{decision.purpose}'"))
                continue
            try:
                channels.append(storage_channel(rule, decision.channel, loc=[*loc, "channel"]))
            except AppError as exc:
                problems += [_error(number, e["loc"], e["msg"]) for e in exc.extra["errors"]]
        if body.captured_at is not None and body.captured_at > latest:
            problems.append(_error(number, ["captured_at"], "captured_at may not be more than 5 minutes in the future"))
        try:
            naming = subjects.naming(keys, tenant=tenant, ref=body.subject, identifiers=body.identifiers, loc=())
        except AppError as exc:
            problems += [_error(number, e["loc"], e["msg"]) for e in exc.extra["errors"]]
        if problems:
            errors += problems[:ERRORS_PER_LINE]
            continue
        digest = consents.request_hash(body)
        if digest in seen:
            repeated += 1
            continue
        seen.add(digest)
        records.append(_Record(number, body, digest, channels, naming))
    if errors:
        raise _invalid(errors)
    return records, repeated


def _invalid(errors: list[dict]) -> Unprocessable:
    errors = sorted(errors, key=lambda e: e["line"])
    bad = len({e["line"] for e in errors})
    return Unprocessable(f"{bad} line{'s' if bad != 1 else ''} cannot be imported; nothing was stored", errors=errors)


async def _claim_new(session: AsyncSession, *, tenant: str, records: list[_Record]) -> list[_Record]:
    """The records not imported before; their digests are claimed in this transaction (concurrent imports queue)."""
    table = ImportedRecord.__table__
    now = utcnow()
    digests = sorted(r.digest for r in records)
    if not digests:
        return []
    if is_postgres(session):
        fresh = await pg_bulk.claim_digests(session, tenant=tenant, digests=digests, at=now)
    else:
        result = await session.execute(
            upsert(session, table).on_conflict_do_nothing(index_elements=["tenant_id", "record_hash"])
            .returning(table.c.record_hash),
            [{"tenant_id": tenant, "record_hash": digest, "imported_at": now} for digest in digests],
        )
        fresh = set(result.scalars())
    return [r for r in records if r.digest in fresh]


async def run(
    session: AsyncSession,
    keys: IdentifierKeys,
    *,
    tenant: str,
    actor: str,
    lines: list[tuple[int, bytes]],
    dry_run: bool = False,
) -> ImportResult:
    """Import `lines` ((line number, NDJSON line) pairs) in the caller's transaction: all of them or none."""
    records, repeated = await prepare(session, keys, tenant=tenant, lines=lines)
    if dry_run:
        return ImportResult(lines=len(lines), imported=0, skipped=0, events=0)
    fresh = await _claim_new(session, tenant=tenant, records=records)
    subject_ids, errors = await subjects.resolve_many(session, keys, tenant=tenant, namings=[r.naming for r in fresh])
    if errors:
        raise _invalid([_error(fresh[e["index"]].line, e["loc"], e["msg"]) for e in errors])
    rules = await purposes.rules(session, tenant=tenant, keys={d.purpose for r in fresh for d in r.body.decisions})
    recorded_at = utcnow()
    events = [
        {
            "event_id": uuid.uuid4(),
            "tenant_id": tenant,
            "subject_id": subject_id,
            "purpose": decision.purpose,
            "purpose_version": rules[decision.purpose].version,
            "channel": channel,
            "status": decision.status,
            "captured_at": record.body.captured_at or recorded_at,
            "recorded_at": recorded_at,
            "source": record.body.source,
            "method": "import",
            "policy_version": record.body.policy_version,
            "collection_point": record.body.collection_point,
            "actor": actor,
            "evidence": record.body.evidence,
        }
        for record, subject_id in zip(fresh, subject_ids, strict=True)
        for decision, channel in zip(record.body.decisions, record.channels, strict=True)
    ]
    if events:
        await consents.append(session, events)
    return ImportResult(lines=len(lines), imported=len(fresh), skipped=len(records) - len(fresh) + repeated, events=len(events))


def split_ndjson(body: bytes, *, max_lines: int, first_line: int = 1) -> list[tuple[int, bytes]]:
    """(line number, line) of every non-blank line; Unprocessable past `max_lines`."""
    lines = [(number, line) for number, line in enumerate(body.split(b"\n"), start=first_line) if line.strip()]
    if len(lines) > max_lines:
        raise Unprocessable(f"at most {max_lines} lines per import request; send the rest in another", loc=["body"])
    return lines
