"""Readiness: does the database answer?"""

import asyncio

from sqlalchemy import text

from app.db import Database, acquire


async def ping(database: Database) -> None:
    """Raise when the database does not answer within the configured timeout; the handler makes that a 503."""
    if database.pool is not None:
        # PostgreSQL: the same server behind both pools; asyncpg's connection is dropped on a timeout at once.
        async with acquire(database.pool) as connection:
            await connection.fetchval("SELECT 1", timeout=database.timeout)
        return
    async with asyncio.timeout(database.timeout):
        async with database.reading() as connection:
            await connection.execute(text("SELECT 1"))
