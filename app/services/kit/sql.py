"""Small SQL helpers that differ by dialect."""

from collections.abc import Iterable
from typing import Any

import asyncpg
from sqlalchemy import Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def _dialect(session: AsyncSession) -> str:
    # The database's sessions are all made bound to its engine.
    assert session.bind is not None, "an unbound session"
    return session.bind.dialect.name


def upsert(session: AsyncSession, table: Table):
    """The dialect's INSERT that supports ON CONFLICT (both PostgreSQL and SQLite have it)."""
    dialect = _dialect(session)
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def is_postgres(session: AsyncSession) -> bool:
    return _dialect(session) == "postgresql"


# SQLite's default limit on bound parameters is 32,766: an IN list is sent in slices well below it.
IN_SLICE = 5_000


def in_slices(values: list) -> list[list]:
    """`values` cut into slices of at most IN_SLICE, for `column.in_(slice)` (none for no values)."""
    return [values[i : i + IN_SLICE] for i in range(0, len(values), IN_SLICE)]


async def raw_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under the session, inside the session's transaction."""
    connection = await session.connection()
    raw = (await connection.get_raw_connection()).driver_connection
    assert raw is not None, "a connection that is open has its driver's connection"
    if not raw.is_in_transaction():
        # SQLAlchemy begins lazily, on its first statement: make it begin before writing behind its back.
        await session.execute(text("SELECT 1"))
    return raw


def columns(rows: list[dict], names: list[str]) -> list[list]:
    """Rows as one list per column, for array parameters (unnest)."""
    return [[row[name] for row in rows] for name in names]


async def through_temp_table(
    db: asyncpg.Connection, *, create: str, table: str, records: Iterable[tuple], statement: str, args: tuple = ()
) -> Any:
    """COPY `records` into the temporary `table` (made by `create`, once per connection, ON COMMIT DELETE ROWS), run
    `statement` (with `args`) over them and return its first value. COPY has no ON CONFLICT: the statement does
    what COPY cannot. The table is emptied after, so that a second use in the same transaction starts empty."""
    await db.execute(create)
    await db.copy_records_to_table(table, records=records)
    value = await db.fetchval(statement, *args)
    await db.execute(f"DELETE FROM {table}")  # noqa: S608 - a constant name of the caller's
    return value
