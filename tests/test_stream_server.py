"""POST /v1/checks/stream through `consentd serve` on PostgreSQL, over a socket, with a client that sends and reads at once.

httpx sends a whole request body before it reads the answer, which a long streaming check cannot wait for (the
server stops reading the list while its answers go unread), so these tests speak HTTP/1.1 themselves: a chunked
request body written by one task while another reads the chunked NDJSON answer. Every wait is bounded.
"""

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from app.services.checks.streams import CHUNK_LINES  # the server answers this many lines at a time
from tests.conftest import bearer, migrated_database
from tests.test_server import REQUEST_TIMEOUT, Server, assert_jwt, consentd_env, run_consentd, start_server

POOL_SIZE = 10  # CONSENTD_DB_POOL_SIZE of the server under test
STREAM_TIMEOUT = 60
GRANTED_EVERY = 997  # person i < SEEDED has granted marketing by email when i % GRANTED_EVERY == 0
SEEDED = 4 * CHUNK_LINES + 1_000  # the longest list whose answers are checked line by line


def person(i: int) -> str:
    return f"person{i:06d}@example.com"


@pytest.fixture(scope="module")
def pg_stream_url(pg_server: str | None) -> Iterator[str]:
    """A migrated PostgreSQL database of this module's own: its server's pool is the only thing using it."""
    yield from migrated_database(pg_server, "consentd_stream")


@pytest.fixture(scope="module")
def server(pg_stream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir: Path = tmp_path_factory.mktemp("stream-server")
    env = consentd_env(pg_stream_url) | {"CONSENTD_DB_POOL_SIZE": str(POOL_SIZE)}
    admin_token = assert_jwt(run_consentd(env, "demo", cwd=workdir).stdout.strip())
    for started in start_server(env, workdir, admin_token):
        with httpx.Client(base_url=started.base_url, headers=bearer(admin_token), timeout=REQUEST_TIMEOUT) as http:
            for i in range(0, SEEDED, GRANTED_EVERY):
                body = {"subject": {"email": person(i)}, "decisions": [{"purpose": "marketing", "channel": "email", "status": "granted"}]}
                assert http.post("/v1/consents", json=body).status_code == 201
        yield started


class RawStream:
    """One POST /v1/checks/stream on a connection of its own: a chunked CSV body out, a chunked NDJSON answer in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self._pending = b""

    @classmethod
    async def open(
        cls,
        server: Server,
        *,
        content_type: str = "text/csv",
        headers: dict[str, str] | None = None,
        receive_buffer: int | None = None,
    ) -> "RawStream":
        url = urlsplit(server.base_url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            # Set before connecting, this also turns off the kernel's autotuning (up to 32 MB on loopback here).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (url.hostname, url.port)), 5)
        reader, writer = await asyncio.open_connection(sock=sock)
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        writer.write(
            "POST /v1/checks/stream?purpose=marketing&channel=email HTTP/1.1\r\n"
            f"Host: {url.netloc}\r\nAuthorization: Bearer {server.admin_token}\r\n"
            f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n{extra}\r\n".encode()
        )
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await self.writer.drain()

    async def finish(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    async def read_head(self) -> None:
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}

    async def chunks(self) -> AsyncIterator[bytes]:
        """The answer's body, chunk by chunk, until its last chunk."""
        assert self.headers.get("transfer-encoding") == "chunked", self.headers
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return
            data = await self.reader.readexactly(size + 2)
            yield data[:-2]

    async def rows(self) -> AsyncIterator[dict]:
        """The answer's NDJSON lines as they arrive."""
        async for data in self.chunks():
            *complete, self._pending = (self._pending + data).split(b"\n")
            for line in complete:
                yield orjson.loads(line)
        assert self._pending == b"", f"the answer ended inside a line: {self._pending[:200]!r}"

    def abort(self) -> None:
        """Drop the connection at once (RST), as a crashed client would."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(TimeoutError, OSError):
            await asyncio.wait_for(self.writer.wait_closed(), 5)


def csv_lines(start: int, stop: int) -> bytes:
    return b"".join(f"{person(i)}\n".encode() for i in range(start, stop))


async def duplex(server: Server, count: int, *, piece: int = 500) -> list[dict]:
    """Stream `count` people; the first answers must arrive before the list is fully sent."""
    conn = await RawStream.open(server)
    first_answer = asyncio.Event()
    sent_all = asyncio.Event()
    early: list[bool] = []

    async def send() -> None:
        await conn.send(b"email\n")
        head = min(count, CHUNK_LINES + piece)
        for start in range(0, head, piece):
            await conn.send(csv_lines(start, min(start + piece, head)))
        if count > head:
            # The server has a chunk of lines: it answers them before it has the rest of the list.
            await asyncio.wait_for(first_answer.wait(), 20)
        for start in range(head, count, piece):
            await conn.send(csv_lines(start, min(start + piece, count)))
        await conn.finish()
        sent_all.set()

    async def receive() -> list[dict]:
        await conn.read_head()
        assert conn.status == 200, conn.status
        assert conn.headers["content-type"].startswith("application/x-ndjson")
        rows = []
        async for row in conn.rows():
            if not rows:
                early.append(not sent_all.is_set())
                first_answer.set()
            rows.append(row)
        return rows

    try:
        rows, _ = await asyncio.wait_for(asyncio.gather(receive(), send()), STREAM_TIMEOUT)
    finally:
        await conn.close()
    if count > CHUNK_LINES + 500:
        assert early == [True], "the first answers came only after the whole list was sent"
    return rows


def assert_answers(rows: list[dict], count: int) -> None:
    assert [row["line"] for row in rows] == list(range(2, count + 2))
    granted = [row["line"] - 2 for row in rows if row["allowed"]]
    assert granted == list(range(0, count, GRANTED_EVERY))
    assert {row["reason"] for row in rows} == {"consent_granted", "unknown_subject"}


def assert_serving(server: Server) -> None:
    assert server.process.poll() is None, f"the server exited:\n{server.log()}"
    with httpx.Client(base_url=server.base_url, headers=bearer(server.admin_token), timeout=REQUEST_TIMEOUT) as http:
        assert http.get("/readyz").status_code == 200
        answer = http.post("/v1/checks", json={"subject": {"email": person(0)}, "purpose": "marketing", "channel": "email"})
        assert answer.status_code == 200, answer.text
        assert (answer.json()["allowed"], answer.json()["reason"]) == (True, "consent_granted")


async def test_a_long_list_is_answered_while_it_is_sent(server: Server):
    count = 4 * CHUNK_LINES + 123
    started = time.monotonic()
    rows = await duplex(server, count)
    assert_answers(rows, count)
    assert time.monotonic() - started < STREAM_TIMEOUT


# Clients that go away mid-stream, in every state the server can be in.


async def gone_while_the_list_is_sent(server: Server) -> None:
    """Half the list sent, a few answers read, then the connection dropped while the server waits for more."""
    conn = await RawStream.open(server)
    await conn.send(b"email\n" + csv_lines(0, CHUNK_LINES + 100))
    await conn.read_head()
    rows = conn.rows()
    first = await asyncio.wait_for(anext(rows), 20)
    assert first["line"] == 2
    conn.abort()


async def gone_politely_mid_list(server: Server) -> None:
    """The same, with an orderly close (FIN) instead of a reset."""
    conn = await RawStream.open(server)
    await conn.send(b"email\n" + csv_lines(0, CHUNK_LINES + 100))
    await conn.read_head()
    await asyncio.wait_for(anext(conn.rows()), 20)
    await conn.close()


async def gone_before_the_header(server: Server) -> None:
    """The server is still reading the CSV header (the response has not started)."""
    conn = await RawStream.open(server)
    await conn.send(b"ema")
    await asyncio.sleep(0.2)
    conn.abort()


async def gone_while_the_server_writes(server: Server) -> None:
    """A client that sends without reading: the server's answers back up until it blocks writing; then it goes."""
    conn = await RawStream.open(server, receive_buffer=65_536)
    await conn.send(b"email\n")
    try:
        for start in range(0, 400_000, 2_000):
            await asyncio.wait_for(conn.send(csv_lines(start, start + 2_000)), 2)
    except TimeoutError:
        pass  # both sides are blocked: the server on its unread answers, this client on the unread list
    conn.abort()


DISCONNECTS = [gone_while_the_list_is_sent, gone_politely_mid_list, gone_before_the_header, gone_while_the_server_writes]


async def test_clients_that_go_away_leave_the_server_healthy(server: Server):
    # More disconnects than the pool has connections: one leaked connection each would exhaust it.
    gone = 0
    for _ in range(POOL_SIZE // len(DISCONNECTS) + 1):
        for disconnect in DISCONNECTS:
            try:
                await asyncio.wait_for(disconnect(server), STREAM_TIMEOUT)
            except TimeoutError:
                pytest.fail(f"{disconnect.__name__}: no answer after {gone} clients went away (a leaked connection?)")
            gone += 1
    assert gone > POOL_SIZE
    await asyncio.sleep(0.5)
    await asyncio.to_thread(assert_serving, server)
    # More complete streams, one after the other, than the pool has connections: each one completes.
    count = CHUNK_LINES + 1_000
    for _ in range(POOL_SIZE + 2):
        assert_answers(await duplex(server, count), count)
    # And as many at once as the pool holds.
    results = await asyncio.gather(*(duplex(server, 2_000) for _ in range(POOL_SIZE)))
    for rows in results:
        assert_answers(rows, 2_000)
    log = server.log()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-5_000:]


@pytest.mark.parametrize(
    ("content_type", "first_line"),
    [("text/csv", b"email\n"), ("application/x-ndjson", orjson.dumps({"email": person(GRANTED_EVERY)}) + b"\n")],
)
async def test_expect_100_continue_is_answered_before_the_answer_starts(server: Server, content_type, first_line):
    """RFC 9110 10.1.1: a server answers `100 Continue` (or a final status it means) before it waits for the
    content. A client that gets the final 200 first may never send its list (Go's net/http does not)."""
    conn = await RawStream.open(server, content_type=content_type, headers={"Expect": "100-continue"})
    try:
        interim = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 5)
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        body = first_line + (csv_lines(0, 3) if content_type == "text/csv" else b'{"email": "nobody@example.com"}\n')
        await conn.send(body)
        await conn.finish()
        await asyncio.wait_for(conn.read_head(), 5)
        assert conn.status == 200
        rows = [row async for row in conn.rows()]
    finally:
        await conn.close()
    assert [row["reason"] for row in rows] == (
        ["consent_granted", "unknown_subject", "unknown_subject"]
        if content_type == "text/csv" else ["consent_granted", "unknown_subject"]
    )


async def test_a_client_that_sends_everything_before_reading_is_answered(server: Server):
    """Most HTTP libraries send the whole body before they read the answer. The answers wait in a spool (memory,
    then a temporary file) so the server keeps reading the list instead of waiting for the client to read."""
    count = 300_000
    pad = "x" * 48  # about 18 MB of list and 20 MB of answers: more than the socket buffers hold
    # A tiny receive buffer (no kernel autotuning): the answers back up on the server from the first chunk on.
    conn = await RawStream.open(server, receive_buffer=4096)
    try:
        await conn.send(b"external_id\n")
        for start in range(0, count, 10_000):
            await asyncio.wait_for(
                conn.send("".join(f"{pad}{i}\n" for i in range(start, start + 10_000)).encode()), STREAM_TIMEOUT
            )
        await asyncio.wait_for(conn.finish(), STREAM_TIMEOUT)  # the whole list sent, nothing read yet
        await conn.read_head()
        assert conn.status == 200
        lines = 0

        async def read_all() -> None:
            nonlocal lines
            async for row in conn.rows():
                lines += 1
                assert row["reason"] == "unknown_subject"

        await asyncio.wait_for(read_all(), STREAM_TIMEOUT)
    finally:
        await conn.close()
    assert lines == count
    assert_serving(server)
