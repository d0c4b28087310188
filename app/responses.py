"""Responses written without FastAPI's model pass: plain JSON, and streams that answer while reading the body."""

import asyncio
import logging
import tempfile
from collections import deque
from collections.abc import AsyncIterator
from typing import BinaryIO

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from app.errors import PayloadTooLarge
from app.handlers import database_unavailable
from app.services.checks import ChunkFailed

log = logging.getLogger("consentd")


class Spool:
    """Answers waiting for a client that is not reading yet: in memory up to `memory` bytes, then in a temporary
    file. The answering side never waits for the client, so it keeps reading the client's request body: a
    client that sends its whole list before reading the answer (most HTTP libraries) does not deadlock."""

    def __init__(self, memory: int = 4 * 1024 * 1024) -> None:
        self.memory = memory
        self.buffer: deque[bytes] = deque()
        self.buffered = 0
        self.file: BinaryIO | None = None
        self.written = self.read = 0
        self.closed = False
        self.ready = asyncio.Event()

    def write(self, chunk: bytes) -> None:
        # Chunks in memory are always older than chunks in the file: the file exists only once memory is full.
        if self.file is None and self.buffered + len(chunk) <= self.memory:
            self.buffer.append(chunk)
            self.buffered += len(chunk)
        else:
            if self.file is None:
                # Open across writes and reads; _drop_file closes it.
                self.file = tempfile.TemporaryFile(prefix="consentd-stream-")  # noqa: SIM115
            self.file.seek(self.written)
            self.file.write(chunk)
            self.written += len(chunk)
        self.ready.set()

    def close(self) -> None:
        self.closed = True
        self.ready.set()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            while True:
                if self.buffer:
                    chunk = self.buffer.popleft()
                    self.buffered -= len(chunk)
                    yield chunk
                elif self.file is not None and self.read < self.written:
                    self.file.seek(self.read)
                    chunk = self.file.read(min(1024 * 1024, self.written - self.read))
                    self.read += len(chunk)
                    yield chunk
                elif self.file is not None:
                    self._drop_file()
                elif self.closed:
                    return
                else:
                    self.ready.clear()
                    await self.ready.wait()
        finally:
            self._drop_file()

    def _drop_file(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file, self.written, self.read = None, 0, 0


class DuplexStream(StreamingResponse):
    """Streams its body while the handler still reads the request body.

    Starlette's StreamingResponse (under ASGI spec < 2.4, which uvicorn reports) reads `receive` in a task of
    its own to notice a disconnect; that would take the request body from the handler still reading it. Here
    the handler's own reads notice the disconnect (ClientDisconnect) and end the stream. The body is produced
    into a Spool by a task of its own, so producing never waits for the client to read.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        spool = Spool()

        async def produce() -> None:
            try:
                async for chunk in self.body_iterator:
                    if isinstance(chunk, str):  # as StreamingResponse takes one
                        chunk = chunk.encode(self.charset)
                    spool.write(chunk if isinstance(chunk, bytes) else bytes(chunk))
            finally:
                spool.close()

        producer = asyncio.ensure_future(produce())
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in spool.chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            await producer  # its failure, if any, is the stream's
        except OSError:
            raise ClientDisconnect() from None
        finally:
            producer.cancel()


async def ndjson_guarded(answers: AsyncIterator[bytes], *, what: str) -> AsyncIterator[bytes]:
    """`answers`, ended by an error line (never a dropped connection or a half line) when the work fails."""
    try:
        async for chunk in answers:
            yield chunk
    except ClientDisconnect:
        return
    except Exception as exc:
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


def json_response(payload: object, *, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Plain values written by orjson, without a response-model pass (for large or hot answers).

    default=str covers asyncpg's own UUID type; datetimes are written in UTC with Z.
    """
    return Response(
        orjson.dumps(payload, default=str, option=orjson.OPT_UTC_Z), status_code=status_code, headers=headers,
        media_type="application/json",
    )
