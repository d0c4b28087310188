from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from app.deps import DatabaseDep, KeysDep, RuleCacheDep, SessionDep, app_settings, line_format, require_scopes
from app.errors import UnsupportedMediaType
from app.models.common import problem_responses
from app.models.consents import ConsentRecordIn, ConsentRecordOut, ImportResult
from app.security import Principal
from app.services.ledger import consents, imports

router = APIRouter(prefix="/v1/consents", tags=["consents"])


@router.post(
    "", status_code=201, response_model=ConsentRecordOut,
    responses=problem_responses(409),  # an Idempotency-Key used with another body; an identifier of another subject
)
async def record_consents(
    principal: Annotated[Principal, require_scopes("consents:write")],
    body: ConsentRecordIn,
    database: DatabaseDep,
    keys: KeysDep,
    rule_cache: RuleCacheDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")] = None,
) -> JSONResponse:
    """Record decisions for a subject (created when unknown): all of them or none."""
    outcome = await consents.record(
        database,
        keys,
        rule_cache,
        tenant=principal.tenant,
        actor=principal.client,
        body=body,
        idempotency_key=idempotency_key,
    )
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    return JSONResponse(outcome.body, status_code=outcome.status_code, headers=headers)


_IMPORT_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-ndjson": {
                "schema": {"type": "string", "description": "One ConsentRecordIn (a POST /v1/consents body) a line"},
                "example": '{"subject": {"email": "ann@example.com"}, "decisions": [{"purpose": "marketing", '
                '"channel": "email", "status": "granted"}], "captured_at": "2024-03-01T09:00:00Z", "source": "legacy-crm"}\n',
            }
        },
    },
}


@router.post("/import", response_model=ImportResult, openapi_extra=_IMPORT_OPENAPI, responses=problem_responses(415))
async def import_consents(
    principal: Annotated[Principal, require_scopes("consents:write")],
    request: Request,
    session: SessionDep,
    keys: KeysDep,
) -> ImportResult:
    """Import consent records with their original captured_at: every line or none. A 422 lists every bad line
    by number. Records imported before (same content) are skipped, so a re-run stores nothing twice."""
    if line_format(request) != "ndjson":
        raise UnsupportedMediaType("send application/x-ndjson: one POST /v1/consents body a line")
    lines = imports.split_ndjson(await request.body(), max_lines=app_settings(request).import_max_lines)
    return await imports.run(session, keys, tenant=principal.tenant, actor=principal.client, lines=lines)
