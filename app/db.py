"""Database access: the SQLAlchemy async engine (SQLModel sessions) and, on PostgreSQL, an asyncpg pool for hot reads."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app.config import Settings


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL for concurrent readers; BEGIN IMMEDIATE so that two writers queue instead of failing mid-transaction."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000", "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection) -> None:
        # Readers that never write (checks) ask for a deferred transaction and do not queue behind writers.
        deferred = connection.get_execution_options().get("sqlite_deferred", False)
        connection.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")


def create_engine(settings: Settings) -> AsyncEngine:
    """The SQLAlchemy engine for the configured database."""
    if settings.is_postgres:
        return create_async_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_pool_size,
            # No pre-ping: it is a round trip before every transaction. A connection that died is invalidated by
            # the error it raises (answered 503, fail closed), and the next checkout opens a new one.
            # Bound values may carry personal data (evidence, sealed identifiers): keep them out of error messages.
            hide_parameters=True,
            pool_timeout=settings.db_timeout,
            connect_args={"timeout": settings.db_timeout, "command_timeout": settings.db_timeout},
        )
    engine = create_async_engine(settings.database_url, connect_args={"timeout": 30}, hide_parameters=True)
    _configure_sqlite(engine)
    return engine


def asyncpg_dsn(database_url: str) -> str:
    """The plain libpq DSN of a postgresql+asyncpg URL."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """Pool reset for the read pool: its statements never change session state, so skip the reset round trip.

    (asyncpg still rolls back a connection returned inside a transaction before calling this.)
    """


@asynccontextmanager
async def acquire(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled asyncpg connection; one that timed out is dropped, not reset (it may be a black hole)."""
    async with pool.acquire() as connection:
        try:
            yield connection
        except TimeoutError:
            connection.terminate()
            raise


@dataclass
class Database:
    """Everything the app holds open on the database; built in the lifespan, closed at shutdown."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    pool: asyncpg.Pool | None
    timeout: float
    # PostgreSQL: where long reads (services/kit/snapshots.py) open connections of their own; None on SQLite.
    dsn: str | None = None
    # Long reads at once in this process; the next waits its turn.
    long_reads: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(4))

    @classmethod
    async def open(cls, settings: Settings) -> "Database":
        engine = create_engine(settings)
        sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
        pool = None
        if settings.is_postgres:
            # min_size=0: the app starts (and answers 503) even while PostgreSQL is down.
            pool = await asyncpg.create_pool(
                asyncpg_dsn(settings.database_url),
                min_size=0,
                max_size=settings.db_pool_size,
                timeout=settings.db_timeout,
                command_timeout=settings.db_timeout,
                reset=_keep_session,
            )
        dsn = asyncpg_dsn(settings.database_url) if settings.is_postgres else None
        return cls(engine=engine, sessions=sessions, pool=pool, timeout=settings.db_timeout, dsn=dsn)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
        await self.engine.dispose()

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads that never write: deferred on SQLite, so it does not wait for the write lock."""
        async with self.engine.connect() as connection:
            yield await connection.execution_options(sqlite_deferred=True)

    @asynccontextmanager
    async def transaction(self, *, read_only: bool = False) -> AsyncIterator[AsyncSession]:
        """One transaction: commit once when the work succeeds, roll back otherwise.

        `read_only` opens it deferred on SQLite, so readers do not queue behind writers for the write lock.
        """
        async with self.sessions() as session:
            try:
                if read_only:
                    await session.connection(execution_options={"sqlite_deferred": True})
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise
