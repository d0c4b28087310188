"""Rate limits in Redis (CONSENTD_REDIS_URL): against the real Redis on 127.0.0.1:6379, then through
`consentd serve --workers 2`, where two processes must share one limit; and with Redis unreachable (a closed port,
a port that accepts and never answers), where the limit falls back to process memory within a bounded time.

Redis tests skip when no Redis answers locally; under CI=true they fail instead. Each run uses its own key prefix
or secret and deletes the keys it made."""

import contextlib
import logging
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client import REGISTRY

from app.errors import TooManyRequests
from app.services.banner.throttle import KEY_PREFIX, REDIS_TIMEOUT, Throttle
from tests.conftest import IN_CI
from tests.support.postgres import free_port
from tests.support.server import CONSENTD
from tests.test_server import consentd_env, run_consentd
from tests.test_server_ops import Served, serve

REDIS_URL = "redis://127.0.0.1:6379/11"  # a database of its own, away from anything else on this Redis
RATE = 12  # banner requests an hour per address, for the servers: no window ends while a test sends
ORIGIN = "https://shop.example"
TIMEOUT = 10


@pytest.fixture(scope="module")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"Redis is not reachable at {REDIS_URL} ({type(exc).__name__})"
        if IN_CI:
            pytest.fail(message + ": CI never skips Redis")
        pytest.skip(message)
    yield client
    client.close()


def delete_keys(client: redis.Redis, pattern: str) -> None:
    for key in list(client.scan_iter(match=pattern, count=1000)):
        client.delete(key)


def fallbacks() -> float:
    return REGISTRY.get_sample_value("consentd_rate_limit_fallbacks_total") or 0.0


async def allowed(throttle: Throttle, kind: str, identity: str, times: int) -> int:
    """How many of `times` hits of `identity` were let through."""
    passed = 0
    for _ in range(times):
        try:
            await throttle.hit(kind, identity)
            passed += 1
        except TooManyRequests as refused:
            assert int(refused.headers["Retry-After"]) >= 1
    return passed


# --- The Throttle against the real Redis ------------------------------------------------------------------------


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    prefix = f"consentd-test-{secrets.token_hex(6)}"
    yield prefix
    delete_keys(redis_client, f"{prefix}:*")


def throttle_at(url: str, prefix: str = KEY_PREFIX, secret: bytes = b"test-secret") -> Throttle:
    return Throttle(per_ip="5/minute", per_key="7/minute", secret=secret, redis_url=url, key_prefix=prefix)


async def test_two_throttles_share_one_limit_in_redis(redis_client: redis.Redis, prefix: str):
    # Two Throttles stand for two workers (or replicas): memory apart, one Redis.
    first, second = throttle_at(REDIS_URL, prefix), throttle_at(REDIS_URL, prefix)
    try:
        before = fallbacks()
        assert await allowed(first, "ip", "203.0.113.7", 3) == 3
        assert await allowed(second, "ip", "203.0.113.7", 4) == 2
        assert await allowed(first, "ip", "203.0.113.7", 1) == 0
        # Another address and the per-key rate have their own windows.
        assert await allowed(second, "ip", "203.0.113.8", 6) == 5
        assert await allowed(first, "key", "pk_test", 9) == 7
        assert fallbacks() == before, "Redis answered: nothing was counted in memory"
    finally:
        await first.close()
        await second.close()


async def test_keys_are_prefixed_and_hold_no_raw_address(redis_client: redis.Redis, prefix: str):
    throttle = throttle_at(REDIS_URL, prefix)
    try:
        await throttle.hit("ip", "198.51.100.23")
        await throttle.hit("key", "pk_visible_key")
    finally:
        await throttle.close()
    keys = sorted(key.decode() for key in redis_client.scan_iter(match=f"{prefix}:*"))
    assert keys == sorted([
        f"{prefix}:LIMITER/ip/{throttle.identity_hash('198.51.100.23')}/5/1/minute",
        f"{prefix}:LIMITER/key/{throttle.identity_hash('pk_visible_key')}/7/1/minute",
    ])
    assert not any("198.51.100.23" in key or "pk_visible_key" in key for key in keys)
    # The window expires by itself: no key outlives its minute for long.
    assert all(0 < redis_client.ttl(key) <= 60 for key in keys)
    # The hash is keyed: another secret, another key for the same address.
    assert throttle_at(REDIS_URL, prefix, secret=b"another").identity_hash("198.51.100.23") != throttle.identity_hash("198.51.100.23")


# --- Redis unreachable: counted in memory, in bounded time -------------------------------------------------------


async def test_a_closed_port_falls_back_to_the_limit_in_memory(caplog: pytest.LogCaptureFixture):
    throttle = throttle_at(f"redis://127.0.0.1:{free_port()}/0")
    before = fallbacks()
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="consentd"):
            # The limit still holds, per process: a protection is not dropped because its store is down.
            assert await allowed(throttle, "ip", "203.0.113.9", 8) == 5
    finally:
        await throttle.close()
    assert time.monotonic() - started < 2
    assert fallbacks() - before == 8
    warnings = [record.getMessage() for record in caplog.records if "Redis failed" in record.getMessage()]
    assert warnings == ["rate limits: Redis failed (ConnectionError); counting in this process for 5 s"]


async def test_a_redis_that_never_answers_costs_one_bounded_wait(caplog: pytest.LogCaptureFixture):
    # A listening socket nobody reads: connections are accepted by the kernel and never answered.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        throttle = throttle_at(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        try:
            with caplog.at_level(logging.WARNING, logger="consentd"):
                started = time.monotonic()
                await throttle.hit("ip", "203.0.113.10")
                first = time.monotonic() - started
                started = time.monotonic()
                assert await allowed(throttle, "ip", "203.0.113.10", 6) == 4
                rest = time.monotonic() - started
        finally:
            await throttle.close()
    # The first hit waits for the socket timeout (bounded by twice it in all); later ones skip Redis for a while.
    # Generous margins: a loaded machine is slow, but not seconds slow.
    assert REDIS_TIMEOUT * 0.9 <= first < REDIS_TIMEOUT * 2 + 0.5, first
    assert rest < 0.5, rest
    assert [record.getMessage() for record in caplog.records if "Redis failed" in record.getMessage()] == [
        "rate limits: Redis failed (TimeoutError); counting in this process for 5 s"
    ]


def test_a_malformed_redis_url_is_one_line_naming_the_variable(tmp_path: Path):
    for value in ("http://127.0.0.1:6379", "redis://:s3cret-pass@127.0.0.1/db0"):
        env = consentd_env(f"sqlite+aiosqlite:///{tmp_path / 'consentd.db'}") | {"CONSENTD_REDIS_URL": value}
        done = subprocess.run(
            [CONSENTD, "migrate"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: CONSENTD_REDIS_URL: ") and done.stderr.count("\n") == 1, done.stderr
        assert "s3cret" not in done.stderr and value not in done.stderr


# --- consentd serve --workers 2 ----------------------------------------------------------------------------------


@dataclass
class Site:
    served: list[Served]  # two server processes on one database
    key: str  # a publishable key valid from ORIGIN
    hashed: Throttle  # hashes identities as the servers do


def start(workdir: Path, extra: dict[str, str]) -> Iterator[Site]:
    """Two server processes (two workers of one site, as behind a load balancer) with one identifier key of their
    own (hence rate-limit keys of their own) and a publishable key."""
    (workdir / "tmp").mkdir()
    identifier_key = f"throttle-test-{secrets.token_hex(16)}"
    env = consentd_env(f"sqlite+aiosqlite:///{workdir / 'consentd.db'}") | {
        "CONSENTD_IDENTIFIER_KEY": identifier_key, "CONSENTD_PUBLIC_RATE_PER_IP": f"{RATE}/hour",
        "TMPDIR": str(workdir / "tmp"), **extra,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    run_consentd(env, "migrate", cwd=workdir)
    run_consentd(env, "demo", cwd=workdir)
    key = run_consentd(env, "banner-keys", "create", "--tenant", "demo", "--origin", ORIGIN, cwd=workdir).stdout.strip()
    hashed = Throttle(per_ip="1/minute", per_key="1/minute", secret=identifier_key.encode())
    with contextlib.ExitStack() as servers:
        served = []
        for name in ("first", "second"):
            (workdir / name).mkdir()
            served.append(servers.enter_context(contextlib.contextmanager(serve)(workdir / name, env)))
        yield Site(served, key, hashed)


def banner_statuses(site: Site) -> list[int]:
    """GET /v1/public/banner 4 * RATE times, a new connection each, to the two processes in turn (each gets half,
    whatever the machine's load: a kernel sharing one socket between workers may hand one all of them)."""

    def get(n: int) -> int:
        return httpx.get(
            f"{site.served[n % 2].base_url}/v1/public/banner", params={"key": site.key}, headers={"Origin": ORIGIN},
            timeout=TIMEOUT,
        ).status_code

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(get, range(4 * RATE)))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, redis_client: redis.Redis) -> Iterator[Site]:
    for site in start(tmp_path_factory.mktemp("redis-shared"), {"CONSENTD_REDIS_URL": REDIS_URL}):
        try:
            yield site
        finally:
            for identity in ("127.0.0.1", site.key):
                delete_keys(redis_client, f"{KEY_PREFIX}:LIMITER/*/{site.hashed.identity_hash(identity)}/*")


def test_two_processes_share_one_limit_through_redis(shared: Site, redis_client: redis.Redis):
    statuses = banner_statuses(shared)
    assert statuses.count(200) == RATE, statuses
    assert set(statuses) == {200, 429}
    # One window for the address, one for the key, under hashes made with the server's identifier key.
    names = {name.decode() for name in redis_client.scan_iter(match=f"{KEY_PREFIX}:LIMITER/*")}
    assert f"{KEY_PREFIX}:LIMITER/ip/{shared.hashed.identity_hash('127.0.0.1')}/{RATE}/1/hour" in names
    assert f"{KEY_PREFIX}:LIMITER/key/{shared.hashed.identity_hash(shared.key)}/6000/1/minute" in names
    assert not any("127.0.0.1" in name or shared.key in name for name in names)


@pytest.fixture(scope="module")
def per_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    yield from start(tmp_path_factory.mktemp("redis-none"), {})


def test_without_redis_each_process_counts_on_its_own(per_process: Site):
    statuses = banner_statuses(per_process)
    assert set(statuses) == {200, 429}
    # Each of the two processes lets RATE through of the 2 * RATE it is sent: twice the rate in all.
    assert statuses.count(200) == 2 * RATE, statuses
