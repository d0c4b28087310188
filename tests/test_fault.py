"""Fail closed: when PostgreSQL becomes unreachable, every route answers 503 quickly, and recovers after.

The app talks to PostgreSQL through a TCP proxy in the test, which can cut every connection (and refuse
new ones) or swallow traffic (a hung network), then be restored.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.engine import make_url

from app.main import create_app
from app.security import mint_token
from tests.conftest import Backend, assert_problem, bearer, make_tenant, settings_for

DB_TIMEOUT = 2
REQUEST_BOUND = 10  # seconds any single request may take, database down or not
RECOVERY_BOUND = 15


class TcpProxy:
    """A TCP proxy on 127.0.0.1 to an upstream server.

    cut(): close every open connection and refuse new ones (the port stops listening).
    hang(): keep accepting, but forward nothing in either direction (a black hole).
    restore(): forward again, on the same port.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self._writers.add(client_writer)
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(asyncio.open_connection(*self.upstream), 5)
        except (TimeoutError, OSError, asyncio.CancelledError):
            # A cancelled handler is not an error: asyncio would log it as one.
            self._close(client_writer)
            return
        self._writers.add(upstream_writer)
        pipes = [
            asyncio.ensure_future(self._pipe(client_reader, upstream_writer)),
            asyncio.ensure_future(self._pipe(upstream_reader, client_writer)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass
        finally:
            for task in pipes:
                task.cancel()
                self._tasks.discard(task)
            self._close(client_writer)
            self._close(upstream_writer)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()

    def _close(self, writer: asyncio.StreamWriter) -> None:
        self._writers.discard(writer)
        with contextlib.suppress(Exception):
            transport = writer.transport
            if transport.get_extra_info("socket") is not None:
                transport.abort()  # RST-like: no graceful FIN handshake to wait for

    def _close_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        for writer in list(self._writers):
            self._close(writer)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._close_all()

    async def hang(self) -> None:
        self._flowing.clear()

    async def restore(self) -> None:
        self._flowing.set()
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        await self.cut()


@pytest.fixture
async def proxy(pg_url: str) -> AsyncIterator[TcpProxy]:
    url = make_url(pg_url)
    tcp = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await tcp.start()
    try:
        yield tcp
    finally:
        await tcp.close()


@pytest.fixture
async def proxied(pg_url: str, proxy: TcpProxy) -> AsyncIterator[Backend]:
    """A dedicated app whose every database connection goes through the proxy."""
    url = make_url(pg_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    settings = settings_for(url, db_timeout=DB_TIMEOUT)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield Backend("postgres-proxied", url, settings, app)


@pytest.fixture
async def http(proxied: Backend) -> AsyncIterator[httpx.AsyncClient]:
    tenant = await make_tenant(proxied)
    token = mint_token(proxied.settings, tenant=tenant, scopes=["admin"], ttl=600, client="fault-test")
    transport = httpx.ASGITransport(app=proxied.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://consentd.test", headers=bearer(token), timeout=REQUEST_BOUND
    ) as client:
        yield client


SUBJECT = {"email": "fault@example.com"}
CHECK = {"subject": SUBJECT, "purpose": "marketing", "channel": "email"}
CONSENT = {"subject": SUBJECT, "decisions": [{"purpose": "marketing", "channel": "email", "status": "granted"}]}


async def bounded(request, limit: float = REQUEST_BOUND) -> httpx.Response:
    """One request, which must answer (not raise) within `limit` seconds."""
    started = time.monotonic()
    try:
        response = await asyncio.wait_for(request, REQUEST_BOUND)
    except TimeoutError:
        pytest.fail(f"no answer within {REQUEST_BOUND} s while the database is unreachable")
    elapsed = time.monotonic() - started
    path = response.request.url.path
    assert elapsed < limit, f"{path} took {elapsed:.1f} s (limit {limit} s) to answer {response.status_code}"
    return response


def assert_unavailable(response: httpx.Response) -> dict:
    assert response.status_code == 503, f"expected 503, got {response.status_code}: {response.text}"
    body = assert_problem(response, 503)
    assert response.headers.get("retry-after", "").isdigit(), f"no Retry-After: {dict(response.headers)}"
    assert "allowed" not in body and "results" not in body
    return body


async def grant_and_check(http: httpx.AsyncClient) -> None:
    recorded = await http.post("/v1/consents", json=CONSENT)
    assert recorded.status_code == 201, recorded.text
    answer = await http.post("/v1/checks", json=CHECK)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["allowed"], answer.json()["reason"]) == (True, "consent_granted")
    batch = await http.post("/v1/checks/batch", json={"checks": [CHECK]})
    assert batch.status_code == 200 and batch.json()["results"][0]["allowed"] is True, batch.text
    assert (await http.get("/readyz")).status_code == 200


async def assert_fails_closed(
    http: httpx.AsyncClient, limit: float = REQUEST_BOUND, write_limit: float = REQUEST_BOUND
) -> None:
    started = time.monotonic()
    for _ in range(2):  # the first attempt meets the dead pooled connections, the second a fresh connect
        assert_unavailable(await bounded(http.post("/v1/checks", json=CHECK), limit))
    assert_unavailable(await bounded(http.post("/v1/checks/batch", json={"checks": [CHECK, CHECK]}), limit))
    assert_unavailable(await bounded(http.get("/readyz"), limit))
    assert_unavailable(await bounded(http.post("/v1/consents", json=CONSENT), write_limit))
    assert_unavailable(await bounded(http.post("/v1/checks", params={"receipt": "true"}, json=CHECK), limit))
    for audit in ("/v1/audit/verify", "/v1/audit/events", "/v1/audit/access-log"):
        assert_unavailable(await bounded(http.get(audit), write_limit))
    # Routes that never touch the database still answer.
    assert (await bounded(http.get("/healthz"))).status_code == 200
    assert (await bounded(http.get("/metrics"))).status_code == 200
    assert time.monotonic() - started < 6 * REQUEST_BOUND


async def assert_recovers(http: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + RECOVERY_BOUND
    last = None
    while time.monotonic() < deadline:
        check = await bounded(http.post("/v1/checks", json=CHECK))
        ready = await bounded(http.get("/readyz"))
        if check.status_code == 200 and ready.status_code == 200:
            assert (check.json()["allowed"], check.json()["reason"]) == (True, "consent_granted")
            break
        assert check.status_code == 503, check.text  # never anything but fail-closed while recovering
        last = (check.status_code, check.text, ready.status_code, ready.text)
        await asyncio.sleep(0.25)
    else:
        pytest.fail(f"the app did not recover within {RECOVERY_BOUND} s after the database came back: {last}")
    batch = await bounded(http.post("/v1/checks/batch", json={"checks": [CHECK]}))
    assert batch.status_code == 200 and batch.json()["results"][0]["allowed"] is True, batch.text
    # Writes work again too.
    recorded = await bounded(http.post("/v1/consents", json=CONSENT))
    assert recorded.status_code == 201, recorded.text


async def test_database_cut_fails_closed_then_recovers(http: httpx.AsyncClient, proxy: TcpProxy):
    await grant_and_check(http)
    await proxy.cut()
    await assert_fails_closed(http)
    await proxy.restore()
    await assert_recovers(http)


async def test_database_hang_fails_closed_within_timeout_then_recovers(http: httpx.AsyncClient, proxy: TcpProxy):
    """A black hole (packets swallowed, nothing refused): the configured db_timeout bounds every request."""
    await grant_and_check(http)
    await proxy.hang()
    # Checks and readiness read through asyncpg, which drops a timed-out connection at once: one timeout.
    # Writes go through SQLAlchemy, whose pre-ping times out and is followed by a reconnect: two timeouts.
    await assert_fails_closed(http, limit=DB_TIMEOUT + 1.5, write_limit=2 * DB_TIMEOUT + 1.5)
    await proxy.restore()
    await assert_recovers(http)


async def test_starts_while_database_down_then_serves_when_it_comes_back(pg_url: str, proxy: TcpProxy):
    """The lifespan does not need the database: the app starts, answers 503, and serves once it is back."""
    url = make_url(pg_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    settings = settings_for(url, db_timeout=DB_TIMEOUT)
    await proxy.cut()
    app = create_app(settings)
    async with asyncio.timeout(REQUEST_BOUND):
        async with app.router.lifespan_context(app):
            backend = Backend("postgres-proxied", url, settings, app)
            token = mint_token(settings, tenant="nobody", scopes=["admin"], ttl=600, client="fault-test")
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://consentd.test", headers=bearer(token)
            ) as client:
                assert_unavailable(await bounded(client.get("/readyz"), DB_TIMEOUT + 1.5))
                assert_unavailable(await bounded(client.post("/v1/checks", json=CHECK), DB_TIMEOUT + 1.5))
                await proxy.restore()
                tenant = await make_tenant(backend)
                token = mint_token(settings, tenant=tenant, scopes=["admin"], ttl=600, client="fault-test")
                client.headers.update(bearer(token))
                await grant_and_check(client)
