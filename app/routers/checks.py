import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.deps import require_scopes
from app.models.base import utcnow
from app.models.checks import BatchCheckIn, BatchCheckOut, CheckIn, CheckOut
from app.security import Principal

router = APIRouter(prefix="/v1/checks", tags=["checks"])
Checker = require_scopes("checks:read")


def _json(payload: object) -> Response:
    # The hot path: the service builds plain values, orjson writes them; no response-model pass.
    # default=str covers asyncpg's own UUID type.
    return Response(orjson.dumps(payload, default=str, option=orjson.OPT_UTC_Z), media_type="application/json")


@router.post("", response_model=CheckOut)
async def check(request: Request, body: CheckIn, principal: Principal = Checker) -> Response:
    """May we contact this subject for this purpose on this channel? The answer carries its reason."""
    result = await request.app.state.checker.one(tenant=principal.tenant, body=body, at=utcnow())
    return _json(result)


@router.post("/batch", response_model=BatchCheckOut)
async def check_batch(request: Request, body: BatchCheckIn, principal: Principal = Checker) -> Response:
    """Up to 10,000 checks, answered in order."""
    results = await request.app.state.checker.many(tenant=principal.tenant, body=body, at=utcnow())
    return _json({"results": results})
