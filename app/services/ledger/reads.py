"""Reading the ledger: a subject's consents now or as of any instant, and its history with cursor paging."""

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ConsentEvent, ConsentState
from app.models.base import table_of, utcnow
from app.models.consents import ConsentStateOut, HistoryOut, SubjectConsentsOut
from app.services import purposes, subjects
from app.services.checks import Standing, expires_at, is_effective
from app.services.kit import cursors
from app.services.ledger.consents import event_out
from app.services.purposes import Rule, api_channel

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
