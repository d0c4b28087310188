"""Webhook endpoints (scope admin): put, list, read, delete, rotate the secret, test; deliveries and retries."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.deps import DatabaseDep, KeysDep, ReadSessionDep, SessionDep, app_settings, require_scopes, services
from app.models.common import problem_responses
from app.models.notifications import (
    DeliveriesOut,
    DeliveryOut,
    DeliveryStatus,
    WebhookIn,
    WebhookName,
    WebhookOut,
    WebhooksOut,
)
from app.responses import json_response
from app.security import Principal
from app.services.notifications import dispatch, webhooks

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
Admin = require_scopes("admin")


@router.put("/{name}", response_model=WebhookOut, responses={201: {"model": WebhookOut}, **problem_responses(409)})
async def put_webhook(
    principal: Annotated[Principal, Admin], name: WebhookName, body: WebhookIn, request: Request, session: SessionDep,
    keys: KeysDep,
) -> Response:
    """Create (201, with its `secret`, shown once) or replace (200) an endpoint. Its URL must be https to a public
    address (CONSENTD_WEBHOOK_ALLOW_HOSTS lists exceptions): a 422 otherwise."""
    created, out = await webhooks.put(
        session, keys, tenant=principal.tenant, name=name, body=body, allow_hosts=app_settings(request).webhook_allow_hosts
    )
    return json_response(out.model_dump(mode="json", exclude_none=not created), status_code=201 if created else 200)


@router.get("", response_model=WebhooksOut)
async def list_webhooks(principal: Annotated[Principal, Admin], session: ReadSessionDep) -> WebhooksOut:
    return await webhooks.listed(session, tenant=principal.tenant)


@router.get("/{name}", response_model=WebhookOut, response_model_exclude_none=True)
async def get_webhook(principal: Annotated[Principal, Admin], name: WebhookName, session: ReadSessionDep) -> WebhookOut:
    return await webhooks.get(session, tenant=principal.tenant, name=name)


@router.delete("/{name}", status_code=204)
async def delete_webhook(principal: Annotated[Principal, Admin], name: WebhookName, session: SessionDep) -> Response:
    """Remove the endpoint and its deliveries."""
    await webhooks.delete(session, tenant=principal.tenant, name=name)
    return Response(status_code=204)


@router.post("/{name}/rotate-secret", response_model=WebhookOut)
async def rotate_secret(
    principal: Annotated[Principal, Admin], name: WebhookName, session: SessionDep, keys: KeysDep
) -> WebhookOut:
    """A new secret (answered once); the old one keeps signing beside it for 24 hours."""
    return await webhooks.rotate(session, keys, tenant=principal.tenant, name=name)


@router.post("/{name}/test", status_code=202, responses=problem_responses(409))
async def test_webhook(principal: Annotated[Principal, Admin], name: WebhookName, session: SessionDep) -> Response:
    """Send this endpoint a `webhook.test` event (through the outbox, as every event)."""
    return json_response(await webhooks.test(session, tenant=principal.tenant, name=name), status_code=202)


@router.get("/{name}/deliveries", response_model=DeliveriesOut)
async def list_deliveries(
    principal: Annotated[Principal, Admin], name: WebhookName, session: ReadSessionDep,
    status: DeliveryStatus | None = None, cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=webhooks.MAX_PAGE)] = 50,
) -> DeliveriesOut:
    """The endpoint's deliveries, newest first."""
    return await webhooks.deliveries(session, tenant=principal.tenant, name=name, status=status, cursor=cursor, limit=limit)


@router.post("/{name}/deliveries/{delivery_id}/retry", response_model=DeliveryOut)
async def retry_delivery(
    principal: Annotated[Principal, Admin], name: WebhookName, delivery_id: uuid.UUID, request: Request,
    database: DatabaseDep,
) -> DeliveryOut:
    """Send the delivery now, with the same webhook-id; answers it after the attempt."""
    async with database.transaction() as session:
        await webhooks.delivery(session, tenant=principal.tenant, name=name, delivery_id=delivery_id)
    await dispatch.send_now(database, services(request).sender, tenant=principal.tenant, delivery_id=delivery_id)
    async with database.transaction() as session:
        return webhooks.delivery_out(await webhooks.delivery(session, tenant=principal.tenant, name=name, delivery_id=delivery_id))
