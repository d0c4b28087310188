"""Reading the ledger: a subject's consents now or as of any instant, and its history with cursor paging.

`standing` and `events` answer a read and record it in the access log in the same transaction (a read that cannot
be logged is not answered). On PostgreSQL that is one statement on the asyncpg pool, with the purpose rules from
the worker's RuleCache; on SQLite, and for `as_of`/`known_at`, the session's half below.
"""

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database, acquire
from app.errors import NotFound
from app.models import ConsentEvent, ConsentState
from app.models.base import table_of, utcnow
from app.models.consents import ConsentStateOut, HistoryOut, SubjectConsentsOut
from app.security import Principal
from app.services import access as access_log
from app.services import purposes, subjects
from app.services.checks import Standing, expires_at, is_effective
from app.services.kit import cursors
from app.services.ledger.consents import event_out
from app.services.purposes import Rule, RuleCache, api_channel

EVENT_COLUMNS = [c for c in table_of(ConsentEvent).columns if c.name not in ("tenant_id", "evidence")]


def _state_out(rule: Rule | None, row, at: datetime) -> ConsentStateOut:
    standing = Standing(row.event_id, row.status, row.captured_at, row.policy_version, row.purpose_version)
    return ConsentStateOut(
        purpose=row.purpose,
        channel=api_channel(row.channel),
        status=row.status,
        # A decision for a purpose that no longer exists counts for nothing.
        effective=rule is not None and is_effective(rule, standing, at),
        captured_at=row.captured_at,
        expires_at=expires_at(rule, standing) if rule else None,
        event_id=row.event_id,
        policy_version=row.policy_version,
    )


async def consents(
    session: AsyncSession, *, tenant: str, subject_id: uuid.UUID, as_of: datetime | None, known_at: datetime | None = None
) -> SubjectConsentsOut:
    """The standing decision per (purpose, channel): from the projection now, from the events at `as_of`.

    "As of T" means: the decisions captured at or before T, each (purpose, channel) taking the one with the
    latest captured_at (then the later recorded). A decision recorded after T about a moment before T counts,
    so the answer for a past instant can change when an older decision arrives late.

    `known_at` K: only the decisions recorded by K, i.e. what the ledger said at K (as_of defaults to K then).
    """
    if known_at is not None and as_of is None:
        as_of = known_at
    await subjects.require(session, tenant=tenant, subject_id=subject_id)
    rules = await purposes.rules(session, tenant=tenant)
    if as_of is None:
        at = utcnow()
        state = table_of(ConsentState)
        rows = await session.execute(
            select(state).where(state.c.tenant_id == tenant, state.c.subject_id == subject_id)
        )
    else:
        at = as_of
        events = table_of(ConsentEvent)
        ranked = (
            select(
                events,
                func.row_number()
                .over(
                    partition_by=(events.c.purpose, events.c.channel),
                    order_by=(events.c.captured_at.desc(), events.c.seq.desc()),
                )
                .label("rank"),
            )
            .where(
                events.c.tenant_id == tenant, events.c.subject_id == subject_id, events.c.captured_at <= as_of,
                events.c.recorded_at <= known_at if known_at is not None else sa.true(),
            )
            .subquery()
        )
        rows = await session.execute(select(ranked).where(ranked.c.rank == 1))
    out = sorted((_state_out(rules.get(r.purpose), r, at) for r in rows), key=lambda s: (s.purpose, s.channel or ""))
    return SubjectConsentsOut(subject_id=subject_id, as_of=at, known_at=known_at, consents=out)


async def history(
    session: AsyncSession, *, tenant: str, subject_id: uuid.UUID, purpose: str | None, limit: int, cursor: str | None
) -> HistoryOut:
    """Every event of the subject, oldest first by captured_at (ties by ledger order), a page at a time."""
    await subjects.require(session, tenant=tenant, subject_id=subject_id)
    events = table_of(ConsentEvent)
    query = select(*EVENT_COLUMNS).where(events.c.tenant_id == tenant, events.c.subject_id == subject_id)
    if purpose is not None:
        query = query.where(events.c.purpose == purpose)
    page, next_cursor = await cursors.moment_page(
        session, query, at=events.c.captured_at, seq=events.c.seq, cursor=cursor, limit=limit
    )
    return HistoryOut(events=[event_out(dict(row)) for row in page], next_cursor=next_cursor)


# The subject, the access-log entry (only when the subject exists) and the rows, in one statement that commits
# by itself. $1 tenant, $2 subject, $3 the moment, $4 client, $5 action, $6 detail.
_LOGGED = "WITH subject AS (SELECT id FROM subjects WHERE tenant_id = $1 AND id = $2)," + access_log.PG_ENTRY_IF_FOUND
PG_STANDING = _LOGGED + """
SELECT (SELECT config_version FROM tenants WHERE key = $1) AS version, (SELECT count(*) FROM subject) AS found,
       cs.purpose, cs.channel, cs.status, cs.captured_at, cs.event_id, cs.policy_version, cs.purpose_version
FROM (VALUES (1)) AS one(x) LEFT JOIN consent_state cs ON cs.tenant_id = $1 AND cs.subject_id = $2
"""
PG_EVENTS = _LOGGED + """
SELECT (SELECT count(*) FROM subject) AS found, e.*
FROM (VALUES (1)) AS one(x) LEFT JOIN LATERAL (
    SELECT event_id, subject_id, purpose, purpose_version, channel, status, captured_at, recorded_at, source,
           policy_version, collection_point, actor, method, seq
    FROM consent_events
    WHERE tenant_id = $1 AND subject_id = $2 AND ($7::text IS NULL OR purpose = $7) AND (captured_at, seq) > ($8, $9)
    ORDER BY captured_at, seq
    LIMIT $10
) e ON true
"""
_BEGINNING = datetime(1, 1, 1, tzinfo=UTC)


async def standing(
    database: Database, cache: RuleCache, *, reader: Principal, subject_id: uuid.UUID, as_of: datetime | None,
    known_at: datetime | None,
) -> dict:
    """`consents` as JSON-ready values, recorded in the access log in the same transaction; 404 for no such subject."""
    detail = {key: value.isoformat() for key, value in (("as_of", as_of), ("known_at", known_at)) if value} or None
    if database.pool is None or as_of is not None or known_at is not None:
        async with database.transaction() as session:
            found = await consents(session, tenant=reader.tenant, subject_id=subject_id, as_of=as_of, known_at=known_at)
            await access_log.append(session, reader, action=access_log.CONSENTS, subject_id=subject_id, detail=detail)
        return found.model_dump(mode="json")
    at = utcnow()
    async with acquire(database.pool) as connection:
        rows = await connection.fetch(
            PG_STANDING, reader.tenant, subject_id, at, reader.client, access_log.CONSENTS, None
        )
        if not rows[0]["found"]:
            raise NotFound("subject", subject_id)
        rules = await cache.current(connection, tenant=reader.tenant, version=rows[0]["version"])
    out = [_state_json(rules.get(row["purpose"]), row, at) for row in rows if row["purpose"] is not None]
    out.sort(key=lambda s: (s["purpose"], s["channel"] or ""))
    return {"subject_id": subject_id, "as_of": at, "known_at": None, "consents": out}


def _state_json(rule: Rule | None, row, at: datetime) -> dict:
    standing = Standing(row["event_id"], row["status"], row["captured_at"], row["policy_version"], row["purpose_version"])
    return {
        "purpose": row["purpose"], "channel": api_channel(row["channel"]), "status": row["status"],
        "effective": rule is not None and is_effective(rule, standing, at), "captured_at": row["captured_at"],
        "expires_at": expires_at(rule, standing) if rule else None, "event_id": row["event_id"],
        "policy_version": row["policy_version"],
    }


async def events(
    database: Database, *, reader: Principal, subject_id: uuid.UUID, purpose: str | None, limit: int, cursor: str | None
) -> dict:
    """`history` as JSON-ready values, recorded in the access log in the same transaction; 404 for no such subject."""
    if database.pool is None:
        async with database.transaction() as session:
            page = await history(session, tenant=reader.tenant, subject_id=subject_id, purpose=purpose, limit=limit,
                                 cursor=cursor)
            await access_log.append(session, reader, action=access_log.HISTORY, subject_id=subject_id)
        return page.model_dump(mode="json")
    moment, after = cursors.unpack_moment(cursor) if cursor is not None else (_BEGINNING, 0)
    async with acquire(database.pool) as connection:
        rows = await connection.fetch(
            PG_EVENTS, reader.tenant, subject_id, utcnow(), reader.client, access_log.HISTORY, None, purpose, moment,
            after, limit + 1,
        )
    if not rows[0]["found"]:
        raise NotFound("subject", subject_id)
    found = [row for row in rows if row["event_id"] is not None]
    next_cursor = (
        cursors.pack_moment(found[limit - 1]["captured_at"], found[limit - 1]["seq"]) if len(found) > limit else None
    )
    return {
        "events": [
            {
                "event_id": row["event_id"], "subject_id": row["subject_id"], "purpose": row["purpose"],
                "purpose_version": row["purpose_version"], "channel": api_channel(row["channel"]),
                "status": row["status"], "captured_at": row["captured_at"], "recorded_at": row["recorded_at"],
                "source": row["source"], "policy_version": row["policy_version"],
                "collection_point": row["collection_point"], "actor": row["actor"], "method": row["method"],
            }
            for row in found[:limit]
        ],
        "next_cursor": next_cursor,
    }
