"""Readiness: can we reach the database (through every pool the app uses)?"""

from sqlalchemy import text

from app.db import Database


async def ping(database: Database) -> None:
    """Raise when the database does not answer; the handler turns that into 503."""
    async with database.engine.connect() as connection:
        connection = await connection.execution_options(sqlite_deferred=True)
        await connection.execute(text("SELECT 1"))
    if database.pool is not None:
        await database.pool.fetchval("SELECT 1")
