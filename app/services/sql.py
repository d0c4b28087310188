"""Small SQL helpers that differ by dialect."""

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def upsert(session: AsyncSession, table: Table):
    """The dialect's INSERT that supports ON CONFLICT (both PostgreSQL and SQLite have it)."""
    dialect = session.bind.dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def is_postgres(session: AsyncSession) -> bool:
    return session.bind.dialect.name == "postgresql"
