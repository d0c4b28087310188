from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from app.deps import (
    CheckerDep,
    app_settings,
    authorize,
    bearer_token,
    json_body,
    line_format,
    query_flag,
    require_scopes,
    services,
)
from app.errors import UnsupportedMediaType
from app.models.base import utcnow
from app.models.checks import BatchCheckIn, BatchCheckOut, CheckIn, SignedCheckOut
from app.models.common import PURPOSE_KEY, Channel, problem_responses
from app.responses import DuplexStream, body_chunks, json_response, ndjson_guarded
from app.security import Principal
from app.services.audit import receipts
from app.services.checks import CheckStream, Limits

router = APIRouter(prefix="/v1/checks", tags=["checks"])
SCOPE = "checks:read"


class DirectRoute(APIRoute):
    """A route whose endpoint takes the request and returns a Response itself: FastAPI calls it without its request
    handler (dependency solving, body reading, response serialisation: a tenth of a check's CPU, with nothing to
    do). Its OpenAPI entry is built from the declaration as for any route. Exceptions reach the same handlers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        # Nothing would solve them: a route (or router) dependency here is a mistake, refused at startup.
        assert not self.dependant.dependencies, f"{self.path} takes no dependencies"
        return self.endpoint


# POST /v1/checks is the hot path: it reads its token and body itself rather than through FastAPI's parameter
# machinery (about a third of a check's CPU), with the same functions the dependencies use. openapi_extra
# documents what the signature no longer says.
_CHECK_OPENAPI = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CheckIn"}}}},
    "security": [{"HTTPBearer": []}],
    "parameters": [
        {
            "name": "receipt",
            "in": "query",
            "required": False,
            "schema": {"type": "boolean", "default": False},
            "description": "true: the answer adds `receipt`, a compact JWS over it (verify with /.well-known/jwks.json)",
        }
    ],
}


async def check(request: Request) -> Response:
    """May we contact this subject for this purpose on this channel? The answer carries its reason, and with
    `?receipt=true` a signed receipt of itself to keep as proof of the check."""
    principal = await authorize(request, bearer_token(request), (SCOPE,))
    # A check without a query string does not parse one: the receipt costs nothing unless asked for.
    signed = bool(request.scope["query_string"]) and query_flag(request, "receipt")
    body = await json_body(request, CheckIn)
    built = services(request)
    result = await built.checker.one(tenant=principal.tenant, body=body, at=utcnow())
    if signed:
        result = receipts.check_receipt(built.signer, answer=result, tenant=principal.tenant, client=principal.client)
    return json_response(result)


# Added before /batch and /stream, as the decorator did: routes are matched in order, and this one is the hot path.
router.add_api_route(
    "", check, methods=["POST"], response_model=SignedCheckOut, openapi_extra=_CHECK_OPENAPI,
    route_class_override=DirectRoute,
)


@router.post("/batch", response_model=BatchCheckOut)
async def check_batch(body: BatchCheckIn, checker: CheckerDep, principal: Principal = require_scopes(SCOPE)) -> Response:
    """Up to 10,000 checks, answered in order."""
    results = await checker.many(tenant=principal.tenant, body=body, at=utcnow())
    return json_response({"results": results})


_STREAM_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {"schema": {"type": "string"}, "example": "email\nann@example.com\nbob@example.com\n"},
            "application/x-ndjson": {"schema": {"type": "string"}, "example": '{"email": "ann@example.com"}\n'},
        },
    },
    "responses": {
        "200": {
            "description": "One JSON line per input line, in input order",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        }
    },
}


@router.post("/stream", openapi_extra=_STREAM_OPENAPI, response_class=Response, responses=problem_responses(415))
async def check_stream(
    request: Request,
    checker: CheckerDep,
    purpose: Annotated[str, Query(pattern=PURPOSE_KEY)],
    channel: Channel | None = None,
    principal: Principal = require_scopes(SCOPE),
) -> Response:
    """Check a whole list for one purpose and channel: a CSV with a header naming the identifier column, or
    NDJSON with one subject reference a line. Answered as NDJSON while the list is still being read; a bad
    line gets `{"line": n, "error": ...}` and the stream goes on. Read the answer as it comes or after sending."""
    fmt = line_format(request)
    if fmt is None:
        raise UnsupportedMediaType("send text/csv or application/x-ndjson")
    settings = app_settings(request)
    stream = CheckStream(
        checker, tenant=principal.tenant, purpose=purpose, channel=channel,
        limits=Limits(max_lines=settings.stream_max_lines, max_line_bytes=settings.stream_max_line_bytes),
    )
    await stream.open(fmt=fmt, body=body_chunks(request.stream()))
    answers = ndjson_guarded(stream.answers(at=utcnow()), what="a streaming check")
    return DuplexStream(answers, media_type="application/x-ndjson")
