import uuid
from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import Response

from app.deps import AccessLogDep, ReadSessionDep, SignerDep, require_scopes
from app.models.common import problem_responses
from app.models.receipts import ConsentReceiptOut, Jwks
from app.responses import json_response
from app.security import Principal
from app.services import access as access_log
from app.services.audit import receipts

router = APIRouter(prefix="/v1/events", tags=["audit"])
well_known = APIRouter(tags=["audit"])


@router.get("/{event_id}/receipt", response_model=ConsentReceiptOut, responses=problem_responses(409))
async def get_receipt(
    principal: Annotated[Principal, require_scopes("audit:read")],
    event_id: uuid.UUID,
    session: ReadSessionDep,
    signer: SignerDep,
    log: AccessLogDep,
) -> Response:
    """A consent event as a signed consent receipt (ISO/IEC TS 27560 record fields); verify `jws` with the keys of
    /.well-known/jwks.json. Recorded in the access log."""
    receipt = await receipts.consent_receipt(session, signer, tenant=principal.tenant, event_id=event_id)
    await log.record(
        principal, action=access_log.RECEIPT,
        subject_id=uuid.UUID(receipt["pii_principal_id"]), detail={"event_id": str(event_id)},
    )
    # Written as the plain JSON that was signed, not re-serialised through the model.
    return json_response(receipt)


@well_known.get("/.well-known/jwks.json", response_model=Jwks)
async def jwks(signer: SignerDep) -> Response:
    """The public keys that verify receipts: the active signing key and every retired one (RFC 7517)."""
    response = json_response(signer.jwks())
    # Keys change only on a restart with another configuration; clients may keep them a few minutes.
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
