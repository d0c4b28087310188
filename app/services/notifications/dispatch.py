"""Webhook delivery: the tenant's events turned into deliveries for each endpoint subscribed, then sent, signed per
Standard Webhooks, retried on the CONTRACT's schedule.

Events come from two places, both written in the transaction that caused them: the change feed (`consent.changed`,
`subject.restricted`, `subject.erased`, `suppression.changed`: every change of what checks answer is already there,
so a consent write does no extra work for webhooks) and the outbox (outbox.py: the other types). `enqueue` follows
each tenant's feed and outbox from its cursor (`webhook_cursors`, locked while it runs, so one process at a time)
and writes a delivery per event and endpoint in the transaction that moves the cursor: each event is enqueued once.
Its `webhook-id` is fixed then (`msg_<feed seq>` or `msg_<outbox event id>`), the same on every attempt.

`deliver` claims due deliveries (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite has one writer) by moving their
next attempt a lease ahead and committing, then sends them, at most `webhook_concurrency` at a time per endpoint, and
records each outcome. A process killed mid-delivery leaves the lease to run out: the delivery is sent again, same
webhook-id (at least once). 2xx delivers; 410 Gone disables the endpoint; anything else (3xx included: redirects are
not followed), a timeout or a refused address is a failed attempt, retried after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
14 h, 20 h and 24 h, then dead.
"""

import asyncio
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from standardwebhooks.webhooks import Webhook as Signer

from app.db import Database
from app.errors import Unprocessable
from app.models.base import table_of, utcnow
from app.models.notifications import OutboxEvent, Webhook, WebhookCursor, WebhookDelivery
from app.services import changes
from app.services.kit import is_postgres, upsert
from app.services.notifications import urls
from app.services.subjects import IdentifierKeys

log = logging.getLogger("consentd.webhooks")
# Seconds after each failed attempt before the next (CONTRACT): after the ninth failure the delivery is dead.
SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
# A claimed delivery's next attempt moves this far ahead of the claim: past the time its round can take (`rounds`
# timeouts, twice over, and a margin), so a live sender always records its outcome first; a sender that died leaves
# the lease to run out, and the delivery is sent again.
def lease(sender: "Sender", rounds: int = 1) -> timedelta:
    return timedelta(seconds=2 * sender.timeout * rounds + 5)
BATCH = 500
_HOOKS, _DELIVERIES = table_of(Webhook), table_of(WebhookDelivery)
_OUTBOX, _CURSORS = table_of(OutboxEvent), table_of(WebhookCursor)
FEED_TYPES = {
    ("consent", None): "consent.changed", ("subject", "restricted"): "subject.restricted",
    ("subject", "unrestricted"): "subject.restricted", ("subject", "erased"): "subject.erased",
    ("suppression", None): "suppression.changed",
}


@dataclass(frozen=True, slots=True)
class Event:
    message_id: str
    type: str
    body: str
    # Only for webhook.test: the one endpoint it goes to.
    webhook_id: uuid.UUID | None = None


def _iso(moment: Any) -> Any:
    return moment.isoformat().replace("+00:00", "Z") if isinstance(moment, datetime) else moment


def _body(type: str, at: Any, data: dict[str, Any]) -> str:
    return orjson.dumps({"type": type, "timestamp": _iso(at), "data": data}, default=str).decode()


def feed_event(change: dict[str, Any]) -> Event:
    """The webhook event of one change of the feed (ids only: the feed never holds an identifier)."""
    kind = change["kind"]
    type = FEED_TYPES.get((kind, change["status"] if kind == "subject" else None), "consent.changed")
    if kind == "consent":
        data = {k: change[k] for k in ("event_id", "subject_id", "purpose", "channel", "status", "expires_at")}
        data["captured_at"] = change["captured_at"]
    elif kind == "subject":
        data = {"subject_id": change["subject_id"], "status": change["status"]}
    else:
        data = {k: change.get(k) for k in ("subject_id", "status", "channels", "reason", "identifier_type")}
    seq = changes.decode_cursor(change["cursor"])[1]
    return Event(f"msg_{seq}", type, _body(type, change["captured_at"], {k: _iso(v) for k, v in data.items()}))


def outbox_event(row: Any) -> Event:
    return Event(f"msg_{row.event_id}", row.type, _body(row.type, row.created_at, row.data or {}), row.webhook_id)


async def enqueue(database: Database) -> int:
    """Deliveries for every event since each tenant's cursor (tenants with an enabled endpoint); how many."""
    async with database.reading() as connection:
        tenants = list((await connection.execute(
            sa.select(_HOOKS.c.tenant_id).where(_HOOKS.c.enabled.is_(True)).distinct()
        )).scalars())
    made = 0
    for tenant in tenants:
        while True:
            count, more = await _enqueue_tenant(database, tenant)
            made += count
            if not more:
                break
    return made


async def _enqueue_tenant(database: Database, tenant: str) -> tuple[int, bool]:
    async with database.transaction() as session:
        await session.execute(
            upsert(session, _CURSORS).values(tenant_id=tenant, outbox_seq=0).on_conflict_do_nothing(index_elements=["tenant_id"])
        )
        cursor = (await session.execute(
            sa.select(_CURSORS.c.feed_cursor, _CURSORS.c.outbox_seq).where(_CURSORS.c.tenant_id == tenant)
            .with_for_update(skip_locked=True)
        )).first()
        if cursor is None:
            return 0, False  # another process is at it
        hooks = (await session.execute(
            sa.select(_HOOKS.c.id, _HOOKS.c.events).where(_HOOKS.c.tenant_id == tenant, _HOOKS.c.enabled.is_(True))
        )).all()
        page = await changes.page(database, tenant=tenant, after=cursor.feed_cursor, limit=BATCH)
        outbox = (await session.execute(
            sa.select(_OUTBOX).where(_OUTBOX.c.tenant_id == tenant, _OUTBOX.c.seq > cursor.outbox_seq)
            .order_by(_OUTBOX.c.seq).limit(BATCH)
        )).all()
        events = [feed_event(change) for change in page["changes"]] + [outbox_event(row) for row in outbox]
        rows = list(_deliveries(tenant, events, hooks))
        if rows:
            await session.execute(
                upsert(session, _DELIVERIES).on_conflict_do_nothing(index_elements=["webhook_id", "message_id"]), rows
            )
        await session.execute(
            sa.update(_CURSORS).where(_CURSORS.c.tenant_id == tenant).values(
                feed_cursor=page["next_cursor"], outbox_seq=outbox[-1].seq if outbox else cursor.outbox_seq
            )
        )
    return len(rows), len(page["changes"]) == BATCH or len(outbox) == BATCH


def _deliveries(tenant: str, events: list[Event], hooks: Iterable[Any]) -> Iterable[dict[str, Any]]:
    now = utcnow()
    hooks = list(hooks)
    for event in events:
        for hook in hooks:
            wanted = hook.id == event.webhook_id if event.type == "webhook.test" else event.type in (hook.events or [])
            if wanted:
                yield {
                    "id": uuid.uuid4(), "tenant_id": tenant, "webhook_id": hook.id, "message_id": event.message_id,
                    "type": event.type, "body": event.body, "status": "pending", "attempts": 0, "next_attempt_at": now,
                    "created_at": now,
                }


@dataclass
class Sender:
    """What sending needs: the keys that unseal secrets, the exceptions to the public-address rule, the limits."""

    keys: IdentifierKeys
    allow_hosts: list[str]
    concurrency: int
    timeout: float


# Deliveries one endpoint's round claims: its concurrency this many times over.
ROUND = 8


async def due_endpoints(database: Database) -> list[uuid.UUID]:
    """The enabled endpoints with a delivery due now."""
    async with database.reading() as connection:
        return list((await connection.execute(
            sa.select(_DELIVERIES.c.webhook_id).join(_HOOKS, _HOOKS.c.id == _DELIVERIES.c.webhook_id)
            .where(_DELIVERIES.c.status.in_(("pending", "failed")), _DELIVERIES.c.next_attempt_at <= utcnow(),
                   _HOOKS.c.enabled.is_(True))
            .distinct()
        )).scalars())


async def deliver(database: Database, sender: Sender, *, client: httpx.AsyncClient | None = None) -> int:
    """One round for every endpoint with deliveries due, side by side; how many were attempted."""
    endpoints = await due_endpoints(database)
    if not endpoints:
        return 0
    if client is None:
        async with httpx.AsyncClient(timeout=sender.timeout, follow_redirects=False) as own:
            return sum(await asyncio.gather(*(deliver_endpoint(database, sender, e, own) for e in endpoints)))
    return sum(await asyncio.gather(*(deliver_endpoint(database, sender, e, client) for e in endpoints)))


async def deliver_endpoint(database: Database, sender: Sender, webhook_id: uuid.UUID, client: httpx.AsyncClient) -> int:
    """Claim up to ROUND x concurrency of the endpoint's due deliveries, send them `concurrency` at a time, record
    how each went (one transaction); how many were attempted. The claim's lease covers the whole round."""
    now, limit = utcnow(), ROUND * sender.concurrency
    async with database.transaction() as session:
        due = (
            sa.select(_DELIVERIES.c.id)
            .where(_DELIVERIES.c.webhook_id == webhook_id, _DELIVERIES.c.status.in_(("pending", "failed")),
                   _DELIVERIES.c.next_attempt_at <= now)
            .order_by(_DELIVERIES.c.next_attempt_at).limit(limit)
        )
        if is_postgres(session):
            due = due.with_for_update(skip_locked=True)
        claimed = (await session.execute(
            sa.update(_DELIVERIES).where(_DELIVERIES.c.id.in_(due.scalar_subquery()))
            .values(next_attempt_at=now + lease(sender, ROUND)).returning(*_DELIVERIES.c)
        )).all()
        hook = (await session.execute(sa.select(_HOOKS).where(_HOOKS.c.id == webhook_id, _HOOKS.c.enabled.is_(True)))).first()
    if not claimed or hook is None:
        return 0
    gate = asyncio.Semaphore(sender.concurrency)
    # Once a round: the secrets unsealed, the URL checked (and its host resolved).
    signers = signers_of(sender, hook, now)
    try:
        target: urls.Target | Outcome = await urls.resolve(hook.url, sender.allow_hosts)
    except Unprocessable as exc:
        target = Outcome(None, str(exc)[:200])

    async def one(row: Any) -> Outcome:
        if isinstance(target, Outcome):
            return target
        async with gate:
            return await attempt(client, signers, target, row)

    outcomes = await asyncio.gather(*(one(row) for row in claimed))
    await record(database, list(zip(claimed, outcomes, strict=True)))
    return len(claimed)


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int | None
    error: str | None = None


def signers_of(sender: Sender, hook: Any, at: datetime) -> list[Signer]:
    """The endpoint's signers: its secret's, and the previous secret's during a rotation."""
    secrets = [sender.keys.unseal(hook.secret_sealed)]
    if hook.previous_secret_sealed and hook.previous_until and hook.previous_until > at:
        secrets.append(sender.keys.unseal(hook.previous_secret_sealed))
    return [Signer(secret) for secret in secrets]


async def attempt(client: httpx.AsyncClient, signers: list[Signer], target: urls.Target, row: Any) -> Outcome:
    """One POST of the delivery to its checked target, signed now: the webhook-signature header holds a v1
    signature by each signer (two during a rotation)."""
    at = utcnow()
    headers = {
        "content-type": "application/json", "user-agent": "consentd-webhooks", "webhook-id": row.message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(signer.sign(row.message_id, at, row.body) for signer in signers),
    }
    extensions: dict[str, Any] = {}
    if target.host_header is not None:
        headers["host"] = target.host_header
        extensions["sni_hostname"] = target.sni
    try:
        response = await client.post(target.url, content=row.body.encode(), headers=headers, extensions=extensions)
    except httpx.HTTPError as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:200] if str(exc) else type(exc).__name__)
    return Outcome(response.status_code)


def _result(row: Any, outcome: Outcome, now: datetime) -> dict[str, Any]:
    """The delivery's row after this attempt: delivered, failed (the next attempt scheduled) or dead."""
    attempts = row.attempts + 1
    values: dict[str, Any] = {
        "at_id": row.id, "attempts": attempts, "last_status_code": outcome.status_code, "last_error": outcome.error,
        "status": "dead", "next_attempt_at": row.next_attempt_at, "delivered_at": row.delivered_at,
    }
    if outcome.status_code is not None and 200 <= outcome.status_code < 300:
        values |= {"status": "delivered", "delivered_at": now, "last_error": None}
    elif outcome.status_code == 410:
        values["last_error"] = "410 Gone: the receiver asked for no more deliveries"
    elif attempts <= len(SCHEDULE):
        values |= {"status": "failed", "next_attempt_at": now + timedelta(seconds=SCHEDULE[attempts - 1])}
        if outcome.error is None:
            values["last_error"] = f"the receiver answered {outcome.status_code}"
    return values


async def record(database: Database, attempted: list[tuple[Any, Outcome]]) -> None:
    """Store the attempts' outcomes in one transaction; a 410 disables its endpoint."""
    now = utcnow()
    results = [_result(row, outcome, now) for row, outcome in attempted]
    columns = ("attempts", "last_status_code", "last_error", "status", "next_attempt_at", "delivered_at")
    async with database.transaction() as session:
        await session.execute(
            sa.update(_DELIVERIES).where(_DELIVERIES.c.id == sa.bindparam("at_id"))
            .values({name: sa.bindparam(name) for name in columns}),
            results,
        )
        for hook_id in {row.webhook_id for row, outcome in attempted if outcome.status_code == 410}:
            await _disable(session, hook_id, "the receiver answered 410 Gone")
    for values in results:
        if values["status"] != "delivered":
            log.info("webhook delivery %s: %s (attempt %d)", values["at_id"], values["status"], values["attempts"])


async def _disable(session: AsyncSession, webhook_id: uuid.UUID, reason: str) -> None:
    await session.execute(
        sa.update(_HOOKS).where(_HOOKS.c.id == webhook_id).values(enabled=False, disabled_reason=reason, updated_at=utcnow())
    )


async def send_now(database: Database, sender: Sender, *, tenant: str, delivery_id: uuid.UUID) -> None:
    """Send one delivery at once (a retry asked for by hand), same webhook-id, whatever its schedule."""
    async with database.transaction() as session:
        row = (await session.execute(
            sa.update(_DELIVERIES).where(_DELIVERIES.c.tenant_id == tenant, _DELIVERIES.c.id == delivery_id)
            .values(
                next_attempt_at=utcnow() + lease(sender),
                status=sa.case((_DELIVERIES.c.status == "delivered", "delivered"), else_="pending"),
            )
            .returning(*_DELIVERIES.c)
        )).first()
        hook = (await session.execute(sa.select(_HOOKS).where(_HOOKS.c.id == row.webhook_id))).first() if row else None
    if row is None or hook is None:
        return
    try:
        target = await urls.resolve(hook.url, sender.allow_hosts)
    except Unprocessable as exc:
        await record(database, [(row, Outcome(None, str(exc)[:200]))])
        return
    async with httpx.AsyncClient(timeout=sender.timeout, follow_redirects=False) as client:
        outcome = await attempt(client, signers_of(sender, hook, utcnow()), target, row)
    await record(database, [(row, outcome)])
