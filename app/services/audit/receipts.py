"""Signed receipts: of a consent event (an ISO/IEC TS 27560 consent record), and of a check's answer."""

import time
import uuid
from typing import Any, Literal

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Conflict, NotFound
from app.models import ConsentEvent, PurposeVersion, Tenant
from app.models.base import table_of
from app.models.receipts import CONFORMS_TO, RECEIPT_SCHEMA_VERSION, ConsentReceipt, Controller, ReceiptPurpose
from app.security import Signer
from app.services.checks import Standing, expires_at
from app.services.ledger import event_hash
from app.services.purposes import Rule, api_channel

CONSENT_RECEIPT = "consent-receipt+jwt"
CHECK_RECEIPT = "check-receipt+jwt"
# Where the controller's obligations come from: the catalogue and the rules (PECR, TPS, UK GDPR) are the UK's.
JURISDICTION = "GB"
# 27560's consent states for the ledger's two statuses.
STATES: dict[str, Literal["given", "withdrawn"]] = {"granted": "given", "withdrawn": "withdrawn"}


async def _event(session: AsyncSession, *, tenant: str, event_id: uuid.UUID) -> dict[str, Any]:
    """The event's row with its tenant's name and its purpose's definition at the event's purpose version."""
    events = table_of(ConsentEvent)
    # Every purpose version has its row (purposes.put writes both in one transaction), so the join always finds it.
    query = (
        select(events, col(Tenant.name).label("controller_name"), col(PurposeVersion.definition).label("purpose_definition"))
        .join(Tenant, col(Tenant.key) == events.c.tenant_id)
        .join(
            PurposeVersion,
            and_(
                col(PurposeVersion.tenant_id) == events.c.tenant_id,
                col(PurposeVersion.key) == events.c.purpose,
                col(PurposeVersion.version) == events.c.purpose_version,
            ),
        )
        .where(events.c.tenant_id == tenant, events.c.event_id == event_id)
    )
    row = (await session.execute(query)).mappings().one_or_none()
    if row is None:
        raise NotFound("event", event_id)
    return dict(row)


def _document(row: dict[str, Any]) -> ConsentReceipt:
    definition = row["purpose_definition"]
    rule = Rule(
        key=row["purpose"], legal_basis=definition["legal_basis"], channels=tuple(definition.get("channels") or ()),
        lifespan_days=definition.get("lifespan_days"), reconfirm_days=definition.get("reconfirm_days"),
        version=row["purpose_version"], consent_from_version=row["purpose_version"],
    )
    # Only the expiry is read from these: the receipt describes the event under the version it was given.
    standing = Standing(row["event_id"], row["status"], row["captured_at"], row["policy_version"], row["purpose_version"])
    third_party = definition.get("third_party")
    return ConsentReceipt(
        schema_version=RECEIPT_SCHEMA_VERSION,
        conforms_to=CONFORMS_TO,
        record_id=row["event_id"],
        pii_principal_id=row["subject_id"],
        controller=Controller(id=row["tenant_id"], name=row["controller_name"]),
        jurisdiction=JURISDICTION,
        purposes=[
            ReceiptPurpose(
                purpose_id=row["purpose"], purpose_version=row["purpose_version"], title=definition["title"],
                description=definition.get("description", ""), category=definition["category"],
                lawful_basis=definition["legal_basis"], channel=api_channel(row["channel"]),
                recipients=[third_party] if third_party else [],
            )
        ],
        state=STATES[row["status"]],
        captured_at=row["captured_at"],
        recorded_at=row["recorded_at"],
        expires_at=expires_at(rule, standing),
        policy_version=row["policy_version"],
        collection_point=row["collection_point"],
        collection_method=row["method"],
        source=row["source"],
        recorded_by=row["actor"],
        ledger_hash=row["hash"],
    )


async def consent_receipt(session: AsyncSession, signer: Signer, *, tenant: str, event_id: uuid.UUID) -> dict[str, Any]:
    """The tenant's consent event as a 27560 consent record with `jws` over it; 404 for an event not theirs."""
    row = await _event(session, tenant=tenant, event_id=event_id)
    if row["hash"] is None or event_hash(row) != row["hash"]:
        # A receipt is proof: never sign a row that fails its own hash (GET /v1/audit/verify says more).
        raise Conflict("this event no longer matches its hash in the ledger; run GET /v1/audit/verify")
    document = _document(row).model_dump(mode="json")
    # Signed as the plain JSON the client receives, so that the verified payload minus iss/iat is the document.
    token = signer.sign({**document, "iss": signer.issuer, "iat": int(time.time())}, typ=CONSENT_RECEIPT)
    return {**document, "jws": token}


def check_receipt(signer: Signer, *, answer: dict[str, Any], tenant: str, client: str) -> dict[str, Any]:
    """The check's answer with `receipt`: a JWS over the answer, the tenant and client, iss, iat and a fresh jti."""
    claims = {
        **answer, "tenant": tenant, "client": client, "iss": signer.issuer, "iat": int(time.time()), "jti": str(uuid.uuid4()),
    }
    return {**answer, "receipt": signer.sign(claims, typ=CHECK_RECEIPT)}
