"""Legal holds: reasons to keep a subject's data (a claim, misuse, a legal obligation, an open dispute) that an
erasure respects. A hold is in force from when it is placed until it is released or its `until` passes."""

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, NotFound, Unprocessable
from app.models.base import table_of, utcnow
from app.models.requests import HoldIn, HoldOut, HoldsOut, LegalHold
from app.services import subjects

_HOLDS = table_of(LegalHold)


def _out(row: LegalHold) -> HoldOut:
    return HoldOut(
        hold_id=row.id, reason=row.reason, note=row.note, until=row.until, placed_at=row.placed_at,
        released_at=row.released_at,
    )


def in_force(row: LegalHold, at: datetime) -> bool:
    return row.released_at is None and (row.until is None or at < row.until)


async def in_force_on(session: AsyncSession, *, tenant: str, subject_id: uuid.UUID) -> list[LegalHold]:
    """The holds in force on the subject now, oldest first."""
    now = utcnow()
    rows = await session.execute(
        sa.select(LegalHold).where(
            _HOLDS.c.tenant_id == tenant, _HOLDS.c.subject_id == subject_id, _HOLDS.c.released_at.is_(None),
            sa.or_(_HOLDS.c.until.is_(None), _HOLDS.c.until > now),
        ).order_by(_HOLDS.c.placed_at, _HOLDS.c.id)
    )
    return list(rows.scalars())


async def place(session: AsyncSession, *, tenant: str, subject_id: uuid.UUID, actor: str, body: HoldIn) -> HoldOut:
    """Place a hold on a subject of the tenant (404 for another's)."""
    await subjects.require(session, tenant=tenant, subject_id=subject_id)
    now = utcnow()
    if body.until is not None and body.until <= now:
        raise Unprocessable("a hold's end must be in the future", loc=["body", "until"])
    row = LegalHold(
        tenant_id=tenant, subject_id=subject_id, reason=body.reason, note=body.note, until=body.until,
        placed_at=now, placed_by=actor,
    )
    session.add(row)
    await session.flush()
    return _out(row)


async def of_subject(session: AsyncSession, *, tenant: str, subject_id: uuid.UUID) -> HoldsOut:
    """Every hold ever placed on the subject, oldest first."""
    await subjects.require(session, tenant=tenant, subject_id=subject_id)
    rows = await session.execute(
        sa.select(LegalHold).where(_HOLDS.c.tenant_id == tenant, _HOLDS.c.subject_id == subject_id)
        .order_by(_HOLDS.c.placed_at, _HOLDS.c.id)
    )
    return HoldsOut(holds=[_out(row) for row in rows.scalars()])


async def release(
    session: AsyncSession, *, tenant: str, subject_id: uuid.UUID, hold_id: uuid.UUID, actor: str
) -> HoldOut:
    """Release a hold (409 when it was released already)."""
    row = (
        await session.execute(
            sa.select(LegalHold)
            .where(_HOLDS.c.tenant_id == tenant, _HOLDS.c.subject_id == subject_id, _HOLDS.c.id == hold_id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFound("hold", hold_id)
    if row.released_at is not None:
        raise Conflict("the hold was released already")
    row.released_at, row.released_by = utcnow(), actor
    await session.flush()
    return _out(row)
