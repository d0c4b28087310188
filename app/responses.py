"""Responses written without FastAPI's model pass: plain JSON, and streams that answer while reading the body."""

import logging
from collections.abc import AsyncIterator

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from app.errors import PayloadTooLarge
from app.handlers import database_unavailable
from app.services.streams import ChunkFailed

log = logging.getLogger("consentd")


class DuplexStream(StreamingResponse):
    """Streams its body without listening for disconnect on `receive`.

    Starlette's StreamingResponse (under ASGI spec < 2.4, which uvicorn reports) reads `receive` in a task of
    its own to notice a disconnect; that would take the request body from the handler still reading it. Here
    the handler's own reads notice the disconnect (ClientDisconnect) and end the stream.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.stream_response(send)
        except OSError:
            raise ClientDisconnect() from None


async def ndjson_guarded(answers: AsyncIterator[bytes], *, what: str) -> AsyncIterator[bytes]:
    """`answers`, ended by an error line (never a dropped connection or a half line) when the work fails."""
    try:
        async for chunk in answers:
            yield chunk
    except ClientDisconnect:
        return
    except Exception as exc:  # noqa: BLE001 - the status line is sent; the stream is the only place left to tell
        stopped = {"line": exc.line} if isinstance(exc, ChunkFailed) else {}
        cause = exc.__cause__ if isinstance(exc, ChunkFailed) and exc.__cause__ is not None else exc
        if database_unavailable(cause):
            log.warning("database unavailable during %s: %s", what, type(cause).__name__)
            message = "the database became unavailable; the stream stopped here, retry from this line"
        else:
            log.error("unexpected error during %s", what, exc_info=cause)
            message = "an unexpected error stopped the stream here"
        yield orjson.dumps({**stopped, "error": message}, option=orjson.OPT_APPEND_NEWLINE)


async def body_chunks(receive_stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The request body; a client that went away ends it, a body past its limit raises PayloadTooLarge."""
    try:
        async for chunk in receive_stream:
            if chunk:
                yield chunk
    except ClientDisconnect:
        return
    except HTTPException as exc:
        if exc.status_code == 413:
            raise PayloadTooLarge(str(exc.detail)) from None
        raise


def json_response(payload: object) -> Response:
    """Plain values written by orjson, without a response-model pass (for large or hot answers).

    default=str covers asyncpg's own UUID type; datetimes are written in UTC with Z.
    """
    return Response(orjson.dumps(payload, default=str, option=orjson.OPT_UTC_Z), media_type="application/json")
