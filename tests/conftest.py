"""Test fixtures: one database per run on each backend (SQLite and PostgreSQL), one tenant per test.

Tests are isolated by tenant, not by rolled-back transactions: every table is tenant-scoped, and the
checks read through their own pool, so a test sees exactly what a client would see after a commit.
"""

import asyncio
import os
import secrets
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.db import Database
from app.deps import Services, services_of
from app.main import create_app
from app.migrations import upgrade
from app.security import mint_token
from app.services import tenants
from app.services.purposes import catalogue
from tests.support import postgres

T = TypeVar("T")
IN_CI = os.environ.get("CI", "").lower() == "true"
TEST_SECRET = "test-jwt-secret-0123456789abcdef0123456789"
TEST_IDENTIFIER_KEY = "test-identifier-key-0123456789abcdef"


def settings_for(database_url: str, **overrides: object) -> Settings:
    # Every test's banner requests come from one address: the rate limits have tests of their own.
    defaults = {"public_rate_per_ip": "100000/minute", "public_rate_per_key": "100000/minute", "banner_key_cache_seconds": 0,
                # Tests run the scheduled work themselves (notifications.jobs), against receivers on loopback.
                "jobs": False, "webhook_allow_hosts": ["127.0.0.1"]}
    return Settings(
        env="test",
        database_url=database_url,
        jwt_secret=TEST_SECRET,
        identifier_key=TEST_IDENTIFIER_KEY,
        **(defaults | overrides),
    )


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run set-up work on a loop of its own, in a thread: session fixtures that provision databases are sync."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str | None]:
    """A PostgreSQL server URL: CONSENTD_TEST_DATABASE_URL, else a throwaway cluster, else None (skipped)."""
    url = os.environ.get("CONSENTD_TEST_DATABASE_URL", postgres.DEFAULT_URL)
    if run_sync(postgres.answers(url)):
        yield url
        return
    cluster = postgres.start_cluster()
    if cluster is None:
        message = f"no PostgreSQL answers at {url} and no server binaries are installed"
        if IN_CI:
            pytest.fail(message + ": CI never skips PostgreSQL")
        warnings.warn(f"\n\n*** POSTGRESQL SKIPPED: {message}; only SQLite was tested ***\n", stacklevel=1)
        yield None
        return
    try:
        yield cluster.url
    finally:
        cluster.stop()


def migrated_database(pg_server: str | None, prefix: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database named `prefix_<random>`, dropped afterwards (for `yield from`)."""
    if pg_server is None:
        pytest.skip("PostgreSQL is not available (see the warning above)")
    name = f"{prefix}_{secrets.token_hex(4)}"
    url = run_sync(postgres.create_database(pg_server, name))
    try:
        run_sync(upgrade(url))
        yield url
    finally:
        run_sync(postgres.drop_database(pg_server, name))


@pytest.fixture(scope="session")
def pg_url(pg_server: str | None) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database of this test run's own, dropped at the end."""
    yield from migrated_database(pg_server, "consentd_test")


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "consentd.db"
    url = f"sqlite+aiosqlite:///{path}"
    run_sync(upgrade(url))
    return url


@dataclass
class Backend:
    name: str
    url: str
    settings: Settings
    app: FastAPI

    @property
    def services(self) -> Services:
        return services_of(self.app)

    @property
    def database(self) -> Database:
        return self.services.database


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """The app, started, on one backend; every test that uses it runs on both."""
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    settings = settings_for(url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield Backend(request.param, url, settings, app)


@pytest.fixture
async def pg_backend(backend: Backend) -> Backend:
    """For tests about PostgreSQL behaviour (real concurrency); their SQLite variants are deselected."""
    assert backend.name == "postgres"
    return backend


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    sqlite_only_variants = [
        item for item in items
        if "pg_backend" in getattr(item, "fixturenames", ()) and item.callspec.params.get("backend") == "sqlite"
    ]
    if sqlite_only_variants:
        config.hook.pytest_deselected(items=sqlite_only_variants)
        items[:] = [item for item in items if item not in sqlite_only_variants]


async def make_tenant(backend: Backend) -> str:
    key = f"t{uuid.uuid4().hex[:12]}"
    async with backend.database.transaction() as session:
        await tenants.ensure(session, key=key, name=key)
        await catalogue.load(session, tenant=key, entries=catalogue.default())
    return key


@pytest.fixture
async def tenant(backend: Backend) -> str:
    """A new tenant with the default catalogue: tests never see each other's data."""
    return await make_tenant(backend)


@pytest.fixture
async def other_tenant(backend: Backend) -> str:
    return await make_tenant(backend)


TokenFactory = Callable[..., str]


@pytest.fixture
def token(backend: Backend, tenant: str) -> TokenFactory:
    """token("checks:read", ...) -> a JWT for the test's tenant with those scopes."""

    def make(*scopes: str, tenant_key: str | None = None, client: str = "test-client", ttl: int = 600) -> str:
        return mint_token(backend.settings, tenant=tenant_key or tenant, scopes=list(scopes), ttl=ttl, client=client)

    return make


@pytest.fixture
async def client(backend: Backend, token: TokenFactory) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the app with an admin token of the test's tenant."""
    transport = httpx.ASGITransport(app=backend.app)
    headers = {"Authorization": f"Bearer {token('admin')}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://consentd.test", headers=headers) as http:
        yield http


@pytest.fixture
async def anonymous(backend: Backend) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the app with no token."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=backend.app), base_url="http://consentd.test") as http:
        yield http


def stored_id(backend: Backend, value: str | uuid.UUID) -> str | uuid.UUID:
    """An id as a raw SQL statement binds it on this backend (SQLite stores 32 hex digits)."""
    value = uuid.UUID(str(value))
    return value.hex if backend.name == "sqlite" else value


def bearer(jwt: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt}"}


def assert_problem(response: httpx.Response, status: int) -> dict:
    """The response is an RFC 9457 problem with this status."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and "detail" in body and body["type"]
    return body
