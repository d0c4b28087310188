"""Events that are not changes of the feed (a rectification, a request created or completed), written to the outbox
in the caller's transaction: delivered once it commits, never if it rolls back."""

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.models.notifications import OutboxEvent


async def emit(session: AsyncSession, *, tenant: str, type: str, data: dict[str, Any]) -> None:
    """Put one event in the outbox (ids only in `data`: never an email or a phone number)."""
    session.add(OutboxEvent(tenant_id=tenant, type=type, data=data))
    await session.flush()
