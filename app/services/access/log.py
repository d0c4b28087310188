"""The access log: who (which client) read or exported which subject's data, and when. Append-only.

Entries are written in a transaction of their own, after the read succeeded and before the answer is sent: a
read that cannot be logged is not answered (503). Nothing in the API writes, changes or deletes an entry.
"""

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database
from app.models import AccessLogEntry
from app.models.audit import AccessLogOut, AccessLogPage
from app.models.base import table_of, utcnow
from app.security import Principal
from app.services.kit import cursors

# What was read: a subject found by an identifier, its record, its consents, its history, a receipt of one of its
# events; an export of many subjects' events (subject_id null, the period in `detail`).
LOOKUP, SUBJECT, CONSENTS, HISTORY, RECEIPT, EXPORT = (
    "subject.lookup", "subject.read", "consents.read", "history.read", "receipt.read", "events.export"
)


class AccessLog:
    """Records reads; one per app, on the app's database."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def record(
        self, reader: Principal, *, action: str, subject_id: uuid.UUID | None = None, detail: dict | None = None
    ) -> None:
        """Append one entry for what `reader` (its tenant and client) read, committed before this returns."""
        async with self.database.transaction() as session:
            await append(session, reader, action=action, subject_id=subject_id, detail=detail)


async def append(
    session: AsyncSession, reader: Principal, *, action: str, subject_id: uuid.UUID | None = None,
    detail: dict | None = None,
) -> None:
    """Append one entry in the caller's transaction: the read and its record commit together or not at all."""
    await session.execute(
        sa.insert(table_of(AccessLogEntry)).values(
            tenant_id=reader.tenant, at=utcnow(), client=reader.client, action=action, subject_id=subject_id,
            detail=detail,
        )
    )


async def page(
    session: AsyncSession,
    *,
    tenant: str,
    start: datetime | None,
    end: datetime | None,
    subject_id: uuid.UUID | None,
    limit: int,
    cursor: str | None,
) -> AccessLogPage:
    """Entries of the period [start, end), oldest first, a page at a time; optionally of one subject."""
    table = table_of(AccessLogEntry)
    query = sa.select(table).where(table.c.tenant_id == tenant)
    if start is not None:
        query = query.where(table.c.at >= start)
    if end is not None:
        query = query.where(table.c.at < end)
    if subject_id is not None:
        query = query.where(table.c.subject_id == subject_id)
    entries, next_cursor = await cursors.moment_page(
        session, query, at=table.c.at, seq=table.c.seq, cursor=cursor, limit=limit
    )
    return AccessLogPage(entries=[AccessLogOut.model_validate(dict(row)) for row in entries], next_cursor=next_cursor)
