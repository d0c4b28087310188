"""Webhook endpoints of a tenant: put, list, read, delete, rotate the secret, test; and their deliveries."""

import base64
import os
import uuid
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, NotFound, Unprocessable
from app.models.base import table_of, utcnow
from app.models.notifications import (
    DeliveriesOut,
    DeliveryOut,
    OutboxEvent,
    Webhook,
    WebhookCursor,
    WebhookDelivery,
    WebhookIn,
    WebhookOut,
    WebhooksOut,
)
from app.services import changes
from app.services.kit import cursors, upsert
from app.services.notifications import urls
from app.services.subjects import IdentifierKeys

# After a rotation the old secret signs beside the new one this long, so receivers can switch without a gap.
ROTATION_OVERLAP = timedelta(hours=24)
_HOOKS, _DELIVERIES, _OUTBOX = table_of(Webhook), table_of(WebhookDelivery), table_of(OutboxEvent)
_CURSORS = table_of(WebhookCursor)
MAX_PAGE = 200


def new_secret() -> str:
    """A Standard Webhooks secret: whsec_ and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def _out(row: Webhook, secret: str | None = None) -> WebhookOut:
    return WebhookOut(
        webhook_id=row.id, name=row.name, url=row.url, events=row.events, enabled=row.enabled,
        disabled_reason=row.disabled_reason, created_at=row.created_at, updated_at=row.updated_at, secret=secret,
    )


async def _row(session: AsyncSession, *, tenant: str, name: str, lock: bool = False) -> Webhook:
    query = sa.select(Webhook).where(_HOOKS.c.tenant_id == tenant, _HOOKS.c.name == name)
    row = (await session.execute(query.with_for_update() if lock else query)).scalar_one_or_none()
    if row is None:
        raise NotFound("webhook", name)
    return row


async def put(
    session: AsyncSession, keys: IdentifierKeys, *, tenant: str, name: str, body: WebhookIn, allow_hosts: list[str]
) -> tuple[bool, WebhookOut]:
    """Create or replace the endpoint `name`; (created, the endpoint). The answer that creates it carries the
    secret, once. 422 for a URL consentd will not call (checked now, and again at every delivery)."""
    await urls.resolve(body.url, allow_hosts)
    now = utcnow()
    existing = (await session.execute(
        sa.select(Webhook).where(_HOOKS.c.tenant_id == tenant, _HOOKS.c.name == name).with_for_update()
    )).scalar_one_or_none()
    if existing is not None:
        existing.url, existing.events, existing.enabled, existing.updated_at = body.url, list(body.events), body.enabled, now
        if body.enabled:
            existing.disabled_reason = None
        await session.flush()
        return False, _out(existing)
    await _start_following(session, tenant=tenant)
    secret = new_secret()
    row = Webhook(
        tenant_id=tenant, name=name, url=body.url, events=list(body.events), enabled=body.enabled,
        secret_sealed=keys.seal(secret), created_at=now, updated_at=now,
    )
    session.add(row)
    await session.flush()
    return True, _out(row, secret)


async def _start_following(session: AsyncSession, *, tenant: str) -> None:
    """The tenant's first endpoint hears of what happens from now on, not of the whole history: the enqueue cursor
    starts at the feed's and the outbox's heads (with other endpoints, it is wherever delivery has got to)."""
    if (await session.execute(sa.select(_HOOKS.c.id).where(_HOOKS.c.tenant_id == tenant).limit(1))).first():
        return
    feed = await changes.head(session, tenant=tenant)
    outbox = (await session.execute(sa.select(sa.func.max(_OUTBOX.c.seq)).where(_OUTBOX.c.tenant_id == tenant))).scalar() or 0
    statement = upsert(session, _CURSORS).values(tenant_id=tenant, feed_cursor=feed, outbox_seq=outbox)
    await session.execute(statement.on_conflict_do_update(
        index_elements=["tenant_id"], set_={"feed_cursor": statement.excluded.feed_cursor, "outbox_seq": statement.excluded.outbox_seq},
    ))


async def listed(session: AsyncSession, *, tenant: str) -> WebhooksOut:
    rows = await session.execute(sa.select(Webhook).where(_HOOKS.c.tenant_id == tenant).order_by(_HOOKS.c.name))
    return WebhooksOut(webhooks=[_out(row) for row in rows.scalars()])


async def get(session: AsyncSession, *, tenant: str, name: str) -> WebhookOut:
    return _out(await _row(session, tenant=tenant, name=name))


async def delete(session: AsyncSession, *, tenant: str, name: str) -> None:
    """Remove the endpoint and its deliveries (sent or not)."""
    row = await _row(session, tenant=tenant, name=name, lock=True)
    await session.execute(sa.delete(_DELIVERIES).where(_DELIVERIES.c.webhook_id == row.id))
    await session.execute(sa.delete(_OUTBOX).where(_OUTBOX.c.webhook_id == row.id))
    await session.execute(sa.delete(_HOOKS).where(_HOOKS.c.id == row.id))


async def rotate(session: AsyncSession, keys: IdentifierKeys, *, tenant: str, name: str) -> WebhookOut:
    """A new secret, answered once; the old one signs too for ROTATION_OVERLAP (both signatures in the header)."""
    row = await _row(session, tenant=tenant, name=name, lock=True)
    secret, now = new_secret(), utcnow()
    row.previous_secret_sealed, row.previous_until = row.secret_sealed, now + ROTATION_OVERLAP
    row.secret_sealed, row.updated_at = keys.seal(secret), now
    await session.flush()
    return _out(row, secret)


async def test(session: AsyncSession, *, tenant: str, name: str) -> dict[str, Any]:
    """A `webhook.test` event for this endpoint only, through the outbox like every other."""
    row = await _row(session, tenant=tenant, name=name)
    if not row.enabled:
        raise Conflict("the webhook is disabled: enable it (PUT with enabled true) first")
    event = OutboxEvent(tenant_id=tenant, type="webhook.test", webhook_id=row.id, data={"webhook": name})
    session.add(event)
    await session.flush()
    return {"event_id": str(event.event_id), "type": "webhook.test"}


def delivery_out(row: Any) -> DeliveryOut:
    return DeliveryOut(
        delivery_id=row.id, webhook_id=row.webhook_id, message_id=row.message_id, type=row.type, status=row.status,
        attempts=row.attempts, last_status_code=row.last_status_code, last_error=row.last_error,
        next_attempt_at=row.next_attempt_at if row.status in ("pending", "failed") else None,
        created_at=row.created_at, delivered_at=row.delivered_at,
    )


async def deliveries(
    session: AsyncSession, *, tenant: str, name: str, status: str | None, cursor: str | None, limit: int
) -> DeliveriesOut:
    """The endpoint's deliveries, newest first, `limit` at a time."""
    hook = await _row(session, tenant=tenant, name=name)
    d = _DELIVERIES
    query = sa.select(WebhookDelivery).where(d.c.webhook_id == hook.id)
    if status is not None:
        query = query.where(d.c.status == status)
    if cursor is not None:
        created, delivery_id = _unpack(cursor)
        after = sa.tuple_(sa.literal(created, d.c.created_at.type), sa.literal(delivery_id, sa.Uuid))
        query = query.where(sa.tuple_(d.c.created_at, d.c.id) < after)
    rows = list((await session.execute(query.order_by(d.c.created_at.desc(), d.c.id.desc()).limit(limit + 1))).scalars())
    shown = rows[:limit]
    more = len(rows) > limit
    return DeliveriesOut(
        deliveries=[delivery_out(row) for row in shown],
        next_cursor=_pack(shown[-1].created_at, shown[-1].id) if more else None,
    )


async def delivery(session: AsyncSession, *, tenant: str, name: str, delivery_id: uuid.UUID, lock: bool = False) -> WebhookDelivery:
    hook = await _row(session, tenant=tenant, name=name)
    query = sa.select(WebhookDelivery).where(_DELIVERIES.c.webhook_id == hook.id, _DELIVERIES.c.id == delivery_id)
    row = (await session.execute(query.with_for_update() if lock else query)).scalar_one_or_none()
    if row is None:
        raise NotFound("delivery", delivery_id)
    return row


def _pack(created: datetime, delivery_id: uuid.UUID) -> str:
    return cursors.pack(orjson.dumps([created.isoformat(), str(delivery_id)]))


def _unpack(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        created, delivery_id = orjson.loads(cursors.unpack(cursor))
        return datetime.fromisoformat(created), uuid.UUID(delivery_id)
    except (ValueError, TypeError) as exc:
        raise Unprocessable("invalid cursor", loc=["query", "cursor"]) from exc
