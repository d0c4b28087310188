"""Tenants."""

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict
from app.models import Tenant
from app.services.sql import upsert


async def ensure(session: AsyncSession, *, key: str, name: str) -> bool:
    """Create the tenant unless it exists; True when it was created."""
    result = await session.execute(
        upsert(session, Tenant.__table__).values(key=key, name=name).on_conflict_do_nothing(index_elements=["key"])
    )
    return result.rowcount == 1


async def create(session: AsyncSession, *, key: str, name: str) -> None:
    """Create a new tenant; 409 when the key is taken."""
    if not await ensure(session, key=key, name=name):
        raise Conflict(f"tenant '{key}' exists already")
