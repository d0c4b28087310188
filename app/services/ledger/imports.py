"""Bulk import of consent records from a legacy system: NDJSON of `POST /v1/consents` bodies.

A request (or a CLI chunk) is all or nothing. Each record is remembered by a digest of its meaning, so an
import that is run again after an interruption skips what it already stored and stores nothing twice.
"""

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, cast

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import AppError, Unprocessable
from app.models import ImportedRecord
from app.models.base import table_of, utcnow
from app.models.consents import ConsentRecordIn, ImportResult
from app.services import purposes, subjects
from app.services.kit import is_postgres, raw_connection, upsert
from app.services.ledger import bulk as pg_bulk
from app.services.ledger import chains, consents, events
from app.services.purposes import Rule, check_status, storage_channel
from app.services.subjects import IdentifierKeys

# At most this many errors are listed per line: enough to fix it, bounded for a line full of mistakes.
ERRORS_PER_LINE = 5


class Record(NamedTuple):
    """A checked line, in plain values (it may come back from a worker process)."""

    line: int
    digest: str
    decisions: tuple[events.Decided, ...]
    captured_at: datetime | None
    source: str
    policy_version: str | None
    collection_point: str | None
    evidence: dict | None
    naming: subjects.Naming


@dataclass
class Checked:
    """What checking a batch of lines found: the records to store, repeats within the batch, bad lines."""

    records: list[Record]
    repeated: int
    errors: list[dict]

    def __reduce__(self) -> tuple:
        # From a check worker, the records travel as plain tuples, which pickle in C: as dataclasses or named
        # tuples they took 13 us a line to pickle and 10 to unpickle, more than checking the line.
        packed = [(*record[:-1], record.naming.packed()) for record in self.records]
        return _unpacked, (packed, self.repeated, self.errors)


def _unpacked(packed: list[tuple], repeated: int, errors: list[dict]) -> Checked:
    return Checked([Record._make((*fields, subjects.Naming.unpacked(naming))) for *fields, naming in packed], repeated, errors)


def _error(line: int, loc: list, msg: str) -> dict[str, Any]:
    return {"line": line, "loc": loc, "msg": msg}


def check_lines(
    lines: list[tuple[int, bytes]], *, rules: dict[str, Rule], keys: IdentifierKeys, tenant: str, latest: datetime
) -> Checked:
    """Validate every line (JSON, purposes, channels, identifiers, captured_at no later than `latest`) without
    the database. Pure and CPU-bound: `consentd import` runs it in worker processes."""
    records: list[Record] = []
    errors: list[dict] = []
    seen: set[str] = set()
    # Lines tend to repeat their decisions and source: one object for each value makes a chunk smaller to pickle.
    shared: dict[Any, Any] = {}
    repeated = 0
    for number, line in lines:
        try:
            body = ConsentRecordIn.model_validate_json(line)
        except ValidationError as exc:
            issues = exc.errors(include_url=False, include_input=False)[:ERRORS_PER_LINE]
            errors += [_error(number, list(issue["loc"]), issue["msg"]) for issue in issues]
            continue
        problems: list[dict] = []
        decisions: list[events.Decided] = []
        for index, decision in enumerate(body.decisions):
            loc: list[str | int] = ["decisions", index]
            rule = rules.get(decision.purpose)
            if rule is None:
                problems.append(_error(number, [*loc, "purpose"], f"unknown purpose '{decision.purpose}'"))
                continue
            try:
                channel = storage_channel(rule, decision.channel, loc=[*loc, "channel"])
            except AppError as exc:
                problems += [_error(number, e["loc"], e["msg"]) for e in exc.extra["errors"]]
                continue
            try:
                check_status(rule, decision.status, loc=[*loc, "status"])
            except AppError as exc:
                problems += [_error(number, e["loc"], e["msg"]) for e in exc.extra["errors"]]
                continue
            decisions.append(events.Decided(decision.purpose, channel, decision.status))
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
        decided = tuple(decisions)
        records.append(
            Record(
                number, digest, shared.setdefault(decided, decided), body.captured_at,
                shared.setdefault(body.source, body.source), body.policy_version, body.collection_point, body.evidence,
                naming,
            )
        )
    return Checked(records, repeated, errors)


def latest_capture() -> datetime:
    """The latest captured_at an import accepts now (a little clock skew is allowed)."""
    return utcnow() + consents.MAX_CLOCK_SKEW


def _invalid(errors: list[dict]) -> Unprocessable:
    errors = sorted(errors, key=lambda e: e["line"])
    bad = len({e["line"] for e in errors})
    return Unprocessable(f"{bad} line{'s' if bad != 1 else ''} cannot be imported; nothing was stored", errors=errors)


async def _claim_new(session: AsyncSession, *, tenant: str, records: list[Record]) -> list[Record]:
    """The records not imported before; their digests are claimed in this transaction (concurrent imports queue)."""
    table = table_of(ImportedRecord)
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
    checked: Checked | None = None,
) -> ImportResult:
    """Import `lines` ((line number, NDJSON line) pairs) in the caller's transaction: all of them or none.

    `checked` is `check_lines` of these lines when the caller has already run it (in another process).
    """
    if checked is None:
        rules = await purposes.rules(session, tenant=tenant)
        # CPU work (normalisation, hashing, sealing): in a thread, so that the event loop keeps answering checks.
        checked = await asyncio.to_thread(
            check_lines, lines, rules=rules, keys=keys, tenant=tenant, latest=latest_capture()
        )
    if checked.errors:
        raise _invalid(checked.errors)
    return await _store(session, keys, tenant=tenant, actor=actor, lines=len(lines), checked=checked)


async def _store(
    session: AsyncSession, keys: IdentifierKeys, *, tenant: str, actor: str, lines: int, checked: Checked
) -> ImportResult:
    fresh = await _claim_new(session, tenant=tenant, records=checked.records)
    skipped = len(checked.records) - len(fresh) + checked.repeated
    if not fresh:  # all imported before (an import run again)
        return ImportResult(lines=lines, imported=0, skipped=skipped, events=0)
    resolved = await subjects.resolve_many(
        session, keys, tenant=tenant, namings=[r.naming for r in fresh], captured=[r.captured_at for r in fresh]
    )
    if resolved.errors:
        raise _invalid([_error(fresh[e["index"]].line, e["loc"], e["msg"]) for e in resolved.errors])
    # No errors: every record has its subject.
    subject_ids = cast(list[uuid.UUID], resolved.subject_ids)
    # The versions as they stand now (a purpose may have changed since the lines were checked).
    rules = await purposes.rules(session, tenant=tenant, keys={d.purpose for r in fresh for d in r.decisions})
    drafted = _drafts(tenant=tenant, actor=actor, records=fresh, subject_ids=subject_ids, rules=rules)
    if drafted and is_postgres(session):
        await _append_pg(session, drafted, created=resolved.created, rules=rules)
    elif drafted:
        await consents.append(session, drafted, rules)
    return ImportResult(lines=lines, imported=len(fresh), skipped=skipped, events=len(drafted))


def _drafts(
    *, tenant: str, actor: str, records: list[Record], subject_ids: list[uuid.UUID], rules: dict[str, Rule]
) -> list[events.Draft]:
    now = utcnow()
    return [
        draft
        for record, subject_id in zip(records, subject_ids, strict=True)
        for draft in events.drafts(
            events.Record(
                tenant=tenant, decisions=record.decisions,
                # A moment ahead of the clock (within the skew) or none: the moment the ledger records it.
                captured_at=record.captured_at if record.captured_at and record.captured_at <= now else None,
                source=record.source, method="import", policy_version=record.policy_version,
                collection_point=record.collection_point, actor=actor, evidence=record.evidence,
            ),
            subject_id=subject_id, rules=rules,
        )
    ]


async def _append_pg(
    session: AsyncSession, drafted: list[events.Draft], *, created: set[uuid.UUID], rules: dict[str, Rule]
) -> None:
    """consents.append for an import on PostgreSQL: the same events, chains, states and feed, written with COPY.

    Most subjects of an import were created by this transaction: their chains start empty and are written once,
    with their final heads, instead of being created, locked and moved. The others' heads are locked first (in
    subject order, as chains.link does), then moved by primary key.
    """
    tenant = drafted[0].tenant_id
    known = sorted({d.subject_id for d in drafted if d.subject_id not in created}, key=str)
    heads: dict[uuid.UUID, chains.Head] = dict.fromkeys(created, chains.EMPTY)
    if known:
        heads.update(await chains.lock_pg(await raw_connection(session), tenant, known))
    # Stamped after the wait for the locks: along a chain, recorded_at never runs backwards.
    chained = chains.chained(drafted, heads, recorded_at=utcnow())
    # In subject order (a UUID's int orders as its text and as PostgreSQL's uuid).
    moved = sorted(((s, *heads[s]) for s in {e.subject_id for e in chained}), key=lambda h: h[0].int)
    opened = [h for h in moved if h[0] in created]
    if opened:
        await pg_bulk.open_chains(session, tenant=tenant, heads=opened)
    if len(opened) < len(moved):
        await pg_bulk.move_heads(session, [h for h in moved if h[0] not in created])
    rows = [event.row() for event in chained]
    await pg_bulk.take_seqs(session, rows)
    await pg_bulk.copy_events(session, rows)
    await pg_bulk.copy_states(session, consents.newest_by_state(rows), consents.expiries(chained, rules))


def split_ndjson(body: bytes, *, max_lines: int) -> list[tuple[int, bytes]]:
    """(line number, line) of every non-blank line; Unprocessable past `max_lines`."""
    lines = [(number, line) for number, line in enumerate(body.split(b"\n"), start=1) if line.strip()]
    if len(lines) > max_lines:
        raise Unprocessable(f"at most {max_lines} lines per import request; send the rest in another", loc=["body"])
    return lines
