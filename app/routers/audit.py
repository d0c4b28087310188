import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from app.deps import AccessLogDep, DatabaseDep, ReadSessionDep, SignerDep, require_scopes
from app.errors import Unprocessable
from app.models.audit import AccessLogPage, VerifyOut
from app.models.base import utcnow
from app.models.common import PURPOSE_KEY, Timestamp
from app.responses import ndjson_guarded
from app.security import Principal
from app.services import access as access_log
from app.services.audit import checkpoints, exports

router = APIRouter(prefix="/v1/audit", tags=["audit"])
Auditor = require_scopes("audit:read")
From = Annotated[Timestamp | None, Query(alias="from", description="inclusive; an instant with a timezone (default: the beginning)")]
To = Annotated[Timestamp | None, Query(alias="to", description="exclusive; an instant with a timezone (default: now)")]
BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)

_EXPORT_OPENAPI = {
    "responses": {
        "200": {
            "description": "The events, oldest captured first: NDJSON (one object a line) or CSV (with a header)",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}, "text/csv": {"schema": {"type": "string"}}},
        }
    }
}


def _period(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    start, end = start or BEGINNING, end or utcnow()
    if start >= end:
        raise Unprocessable("`from` must be before `to`", loc=["query", "from"])
    return start, end


@router.get("/events", response_class=StreamingResponse, openapi_extra=_EXPORT_OPENAPI)
async def export_events(
    principal: Annotated[Principal, Auditor],
    database: DatabaseDep,
    log: AccessLogDep,
    start: From = None,
    end: To = None,
    purpose: Annotated[str | None, Query(pattern=PURPOSE_KEY)] = None,
    by: Annotated[
        Literal["captured_at", "recorded_at"],
        Query(description="the period is of captured_at (when the decision was made) or recorded_at (when consentd stored it)"),
    ] = "captured_at",
    format: Literal["ndjson", "csv"] = "ndjson",
) -> StreamingResponse:
    """Every consent event captured (or, `by=recorded_at`, recorded) in [from, to), optionally of one purpose,
    streamed in constant memory: `by=recorded_at` finds what was imported today with old timestamps.

    Each row holds every field its hash covers and its place in the subject's hash chain (docs/audit.md), so
    it can be checked without consentd. The export is recorded in the access log."""
    start, end = _period(start, end)
    period = {"tenant": principal.tenant, "start": start, "end": end, "purpose": purpose, "by": by}
    await log.record(
        principal, action=access_log.EXPORT,
        detail={"from": start.isoformat(), "to": end.isoformat(), "by": by, "purpose": purpose, "format": format},
    )
    if format == "csv":
        return StreamingResponse(
            exports.csv_rows(database, **period), media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="consent-events.csv"'},
        )
    return StreamingResponse(
        ndjson_guarded(exports.ndjson(database, **period), what="an audit export"), media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="consent-events.ndjson"'},
    )


@router.get("/verify", response_model=VerifyOut)
async def verify(
    principal: Annotated[Principal, Auditor],
    database: DatabaseDep,
    signer: SignerDep,
    incremental: Annotated[bool, Query(description="read only the chains that moved since the latest checkpoint")] = False,
) -> VerifyOut:
    """Check every event of the ledger against its hash chain, each chain's head, and the latest signed checkpoint:
    `problems` names each event changed, deleted, inserted or reordered behind the service's back."""
    return await checkpoints.verify(database, signer, tenant=principal.tenant, incremental=incremental)


@router.get("/access-log", response_model=AccessLogPage)
async def read_access_log(
    principal: Annotated[Principal, Auditor],
    session: ReadSessionDep,
    start: From = None,
    end: To = None,
    subject_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9_-]+$")] = None,
) -> AccessLogPage:
    """Who (which client) read or exported which subject's data, and when, oldest first. Append-only: nothing in
    the API writes to it."""
    start, end = _period(start, end)
    return await access_log.page(
        session, tenant=principal.tenant, start=start, end=end, subject_id=subject_id, limit=limit, cursor=cursor
    )
