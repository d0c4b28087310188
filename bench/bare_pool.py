"""The asyncpg pool of the bare reference apps (bare_app.py, bare_write_app.py): app.db.Database.open's settings."""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import asyncpg
from fastapi import FastAPI

from app.config import Settings
from app.db import _keep_session


def pool_lifespan(dsn: str, settings: Settings) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A lifespan that keeps `app.state.pool` open while the app runs, sized and timed out as consentd's own."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(
            dsn,
            min_size=0,
            max_size=settings.db_pool_size,
            timeout=settings.db_timeout,
            command_timeout=settings.db_timeout,
            reset=_keep_session,
        )
        try:
            yield
        finally:
            await app.state.pool.close()

    return lifespan
