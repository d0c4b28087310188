"""Transactions on the embedded SQLite database: writers queue, readers do not wait for them."""

import asyncio

from sqlalchemy import text

from app.db import Database
from tests.conftest import settings_for


async def test_sqlite_readers_do_not_queue_behind_a_writer(sqlite_url):
    database = await Database.open(settings_for(sqlite_url))
    try:
        async with database.transaction() as writer:
            await writer.execute(text("INSERT INTO tenants (key, name, created_at) VALUES ('rw', 'rw', '2026-01-01 00:00:00.000000')"))

            async def read() -> int:
                async with database.transaction(read_only=True) as reader:
                    return (await reader.execute(text("SELECT count(*) FROM tenants WHERE key = 'rw'"))).scalar_one()

            # The writer holds SQLite's write lock; a reader still answers at once, from the last committed state.
            assert await asyncio.wait_for(read(), timeout=2) == 0
        async with database.transaction(read_only=True) as reader:
            assert (await reader.execute(text("SELECT count(*) FROM tenants WHERE key = 'rw'"))).scalar_one() == 1
    finally:
        await database.close()
