"""Long reads (verification, the audit export): one snapshot, rows fetched in batches, in constant memory.

On PostgreSQL each long read gets a connection of its own rather than one of the pool's, which the checks
need: a minute-long export must not hold a connection a check is waiting for. Four at a time per process
(Database.long_reads).
Queries are written once, in SQLAlchemy Core; on PostgreSQL they are compiled for asyncpg and run on it
directly (a million rows through SQLAlchemy's result machinery cost several times the query).
"""

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy.dialects.postgresql import asyncpg as pg_asyncpg
from sqlalchemy.sql import Select

from app.db import Database

END = object()
BATCH = 5_000
# Seconds one batch may take (the pool's command timeout is for requests; an anti-join is one long fetch).
FETCH_TIMEOUT = 600
_DIALECT = pg_asyncpg.dialect()


class Rows:
    """A query's rows fetched a batch at a time: next() costs a list index while the batch lasts; END after."""

    def __init__(self, fetch: Callable[[], Awaitable[Sequence[Any]]]) -> None:
        self._fetch = fetch
        self._rows: Sequence[Any] = []
        self._at = 0

    async def next(self) -> Any:
        if self._at == len(self._rows):
            self._rows, self._at = await self._fetch(), 0
            if not self._rows:
                self._fetch = _nothing
                return END
        row = self._rows[self._at]
        self._at += 1
        return row

    async def __aiter__(self) -> AsyncIterator[Any]:
        while (row := await self.next()) is not END:
            yield row


async def _nothing() -> list:
    return []


NO_ROWS = Rows(_nothing)
Query = Callable[[Select], Awaitable[Rows]]


def _asyncpg(query: Select) -> tuple[str, list[Any]]:
    compiled = query.compile(dialect=_DIALECT, compile_kwargs={"render_postcompile": True})
    assert compiled.positiontup is not None, "asyncpg's parameters are positional"
    return str(compiled), [compiled.params[name] for name in compiled.positiontup]


@asynccontextmanager
async def snapshot(database: Database) -> AsyncIterator[Query]:
    """A function running queries in one read-only snapshot; rows come as Rows."""
    async with database.long_reads:
        if database.dsn is not None:
            connection = await asyncpg.connect(database.dsn, timeout=database.timeout)
            try:
                async with connection.transaction(isolation="repeatable_read", readonly=True):

                    async def on_postgres(query: Select) -> Rows:
                        sql, params = _asyncpg(query)
                        cursor = await connection.cursor(sql, *params, timeout=FETCH_TIMEOUT)
                        return Rows(lambda: cursor.fetch(BATCH, timeout=FETCH_TIMEOUT))

                    yield on_postgres
            finally:
                await connection.close(timeout=database.timeout)
            return
        async with database.reading() as connection:

            async def on_sqlite(query: Select) -> Rows:
                result = (await connection.stream(query)).mappings()
                return Rows(lambda: result.fetchmany(BATCH))

            yield on_sqlite
