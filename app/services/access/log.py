"""The access log: who (which client) read or exported which subject's data, and when. Append-only.

An entry is written in the read's own transaction (`append`, or `PG_ENTRY_IF_FOUND` inside the read's statement),
or in one of its own (`AccessLog.record`) after the read succeeded and before the answer is sent: a read that cannot
be logged is not answered (503). Nothing in the API writes, changes or deletes an entry.
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
# events; an export of many subjects' events (subject_id null, the period in `detail`); the export a data-subject
# request hands its subject (the request in `detail`).
LOOKUP, SUBJECT, CONSENTS, HISTORY, RECEIPT, EXPORT, SUBJECT_EXPORT = (
    "subject.lookup", "subject.read", "consents.read", "history.read", "receipt.read", "events.export", "subject.export"
)

# The entry as a CTE of a read's own statement on PostgreSQL, made only when the read's CTE `subject` (the subject's
# id, if it exists) finds it. $1 tenant, $3 the moment, $4 client, $5 action, $6 detail (json); the read numbers
# its other parameters around these.
PG_ENTRY_IF_FOUND = """
logged AS (
    INSERT INTO access_log (tenant_id, at, client, action, subject_id, detail)
    SELECT $1, $3, $4, $5, id, $6::json FROM subject
)"""


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
