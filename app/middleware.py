"""Pure ASGI middleware, one layer: request metrics, request body limits, CORS of the public endpoints, response headers."""

import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.deps import CORS_ORIGIN
from app.errors import problem
from app.handlers import problem_response
from app.metrics import request_latency


class Edge:
    """Every HTTP request's way in and out, in one layer (each layer costs a check its own coroutine and a wrapper
    of `send` per message). In this order, as when they were four middlewares:

    - latency metrics: every request's, labelled by route template (never the raw path);
    - body limits: a body above the path's limit is refused with 413, whether announced by Content-Length or
      streamed;
    - CORS of the banner's public endpoints: the allowed origin a route's check put in the scope is named in
      Access-Control-Allow-Origin of whatever the route answers, errors included (a browser shows a page its
      429 or 422 only then). Other origins get no CORS headers at all;
    - response headers: `X-Content-Type-Options: nosniff` on every response (a 413 or a CORS error too), and
      `Cache-Control: no-store` on every answer under /v1/ that sets no Cache-Control of its own: those carry
      personal data (subjects, consents, checks, exports), which no browser or proxy may keep. The banner script
      sets its own and stays cacheable.
    """

    PUBLIC = "/v1/public/"
    PRIVATE = "/v1/"

    def __init__(self, app: ASGIApp, *, default: int, per_path: dict[str, int]) -> None:
        self.app = app
        self.default = default
        self.per_path = per_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        public = path.startswith(self.PUBLIC)
        private = path.startswith(self.PRIVATE)
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", [])
                if public:
                    headers = _with_cors(headers, scope.get(CORS_ORIGIN))
                headers = [(name, value) for name, value in headers if name != b"x-content-type-options"]
                headers.append((b"x-content-type-options", b"nosniff"))
                if private and not any(name == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            limit = self.per_path.get(path, self.default)
            for name, value in scope["headers"]:
                if name == b"content-length" and value.isdigit() and int(value) > limit:
                    response = problem_response(413, problem(413, "Payload too large", _too_large(limit)))
                    await response(scope, receive, send_with_headers)
                    return
            await self.app(scope, _counting(receive, limit), send_with_headers)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            request_latency(scope["method"], template, str(status)).observe(time.perf_counter() - started)


def _with_cors(headers: list[tuple[bytes, bytes]], origin: str | None) -> list[tuple[bytes, bytes]]:
    """A public answer's headers: Vary: Origin, and the CORS headers when the request's origin was allowed."""
    headers = [(name, value) for name, value in headers if name != b"vary"]
    headers.append((b"vary", b"Origin"))
    if origin is not None:
        headers += [(b"access-control-allow-origin", origin.encode()), (b"access-control-expose-headers", b"Retry-After")]
    return headers


def _too_large(limit: int) -> str:
    return f"the request body is larger than {limit} bytes"


def _counting(receive: Receive, limit: int) -> Receive:
    """Count a body sent without (or despite) Content-Length; past the limit, stop reading with 413."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                # FastAPI turns other errors raised while reading a body into 400; it lets HTTPException through.
                raise HTTPException(413, _too_large(limit))
        return message

    return counted
