"""Tenants."""

from typing import cast

from sqlalchemy import CursorResult, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db import Database
from app.errors import Conflict
from app.models import Tenant
from app.models.base import table_of
from app.services.kit import upsert


async def ensure(session: AsyncSession, *, key: str, name: str) -> bool:
    """Create the tenant unless it exists; True when it was created."""
    result = await session.execute(
        upsert(session, table_of(Tenant)).values(key=key, name=name).on_conflict_do_nothing(index_elements=["key"])
    )
    # An INSERT's result is a CursorResult, which has the rowcount (execute is typed as returning any Result).
    return cast(CursorResult, result).rowcount == 1


async def create(session: AsyncSession, *, key: str, name: str) -> None:
    """Create a new tenant; 409 when the key is taken."""
    if not await ensure(session, key=key, name=name):
        raise Conflict(f"tenant '{key}' exists already")


class TenantDirectory:
    """Which tenants exist, remembered once seen (tenants are never deleted), so the hot path asks once."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._known: set[str] = set()

    async def exists(self, key: str) -> bool:
        if key in self._known:
            return True
        async with self.database.reading() as connection:
            found = (await connection.execute(select(col(Tenant.key)).where(col(Tenant.key) == key))).scalar_one_or_none()
        if found is not None:
            self._known.add(key)
        return found is not None
