from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse

from app.deps import KeysDep, SessionDep, require_scopes
from app.models.consents import ConsentRecordIn, ConsentRecordOut
from app.security import Principal
from app.services import consents

router = APIRouter(prefix="/v1/consents", tags=["consents"])


@router.post("", status_code=201, response_model=ConsentRecordOut)
async def record_consents(
    body: ConsentRecordIn,
    session: SessionDep,
    keys: KeysDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")] = None,
    principal: Principal = require_scopes("consents:write"),
) -> JSONResponse:
    """Record decisions for a subject (created when unknown): all of them or none."""
    outcome = await consents.record(
        session,
        keys,
        tenant=principal.tenant,
        actor=principal.client,
        body=body,
        idempotency_key=idempotency_key,
    )
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    return JSONResponse(outcome.body, status_code=outcome.status_code, headers=headers)
