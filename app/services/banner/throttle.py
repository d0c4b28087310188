"""Request-rate limits for the public endpoints, per client IP and per publishable key (the `limits` library).

Without CONSENTD_REDIS_URL the moving windows live in this process's memory: with N server processes a client
gets up to N times the rate, which is still a bound. With it they live in Redis, shared by every worker and
replica, so the rate is exact. A rate limiter is a protection, not a consent decision: when Redis fails, the
request is counted in this process's memory instead (the bound without Redis), never refused for it.
"""

import asyncio
import hashlib
import logging
import math
import time

import redis.asyncio
from limits import RateLimitItem, aio, parse
from limits.errors import StorageError
from prometheus_client import Counter

from app.errors import TooManyRequests
from app.services.banner.local_window import LocalWindow

log = logging.getLogger("consentd")

KEY_PREFIX = "consentd:throttle"
# The most a hit may wait on Redis (connect, script, reply) before it is counted in memory instead.
REDIS_TIMEOUT = 0.25
# After a failure Redis is left alone this long, so an outage costs one timeout per process, not one per request.
REDIS_PAUSE_SECONDS = 5.0

FALLBACKS = Counter(
    "consentd_rate_limit_fallbacks_total",
    "Rate-limit hits counted in process memory because Redis failed or was paused after a failure",
)


class Throttle:
    """Moving-window limits in memory, or in Redis when `redis_url` is set (falling back to memory)."""

    def __init__(
        self, *, per_ip: str, per_key: str, secret: bytes, redis_url: str | None = None, key_prefix: str = KEY_PREFIX
    ) -> None:
        self._rates = {"ip": parse(per_ip), "key": parse(per_key)}
        # Keys hold a keyed hash of the address or key, not the address itself: Redis is not where personal data
        # should sit, and every replica derives the same hash from the same secret (shortened: blake2b keys are
        # at most 64 bytes).
        self._secret = hashlib.blake2b(secret, digest_size=32, person=b"consentd-rate").digest()
        # limits' moving window, at a constant cost a hit (local_window.py says why not its MemoryStorage).
        self._local = LocalWindow()
        self._pool: redis.asyncio.ConnectionPool | None = None
        self._shared: aio.strategies.MovingWindowRateLimiter | None = None
        self._paused_until = 0.0
        if redis_url:
            # A pool of our own, so that close() closes it, whose connections never retry: a client built from a
            # URL would retry 3 times with a backoff of seconds, and a slow Redis must not slow the banner.
            self._pool = redis.asyncio.ConnectionPool.from_url(
                redis_url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT, retry=None,
            )
            storage = aio.storage.RedisStorage(
                "async+redis://", implementation="redispy", key_prefix=key_prefix, wrap_exceptions=True,
                # limits documents connection_pool but types **options as float | str | bool.
                connection_pool=self._pool,  # type: ignore[arg-type]
            )
            self._shared = aio.strategies.MovingWindowRateLimiter(storage)

    async def hit(self, kind: str, identity: str) -> None:
        """Count one request of `identity` ("ip" or "key"); 429 with Retry-After once its rate is spent."""
        rate = self._rates[kind]
        digest = self.identity_hash(identity)
        outcome = await self._shared_hit(self._shared, rate, kind, digest) if self._shared is not None else None
        if outcome is None:
            outcome = self._local_hit(rate, kind, digest)
        allowed, reset = outcome
        if allowed:
            return
        raise TooManyRequests(f"too many requests from this {'address' if kind == 'ip' else 'key'}; retry later",
                              retry_after=max(1, math.ceil(reset - time.time())))

    def identity_hash(self, identity: str) -> str:
        """What the keys hold in place of an address or publishable key: a keyed hash, the same on every replica."""
        return hashlib.blake2b(identity.encode(), key=self._secret, digest_size=16).hexdigest()

    def _local_hit(self, rate: RateLimitItem, kind: str, digest: str) -> tuple[bool, float]:
        if self._local.hit(rate, kind, digest):
            return True, 0.0
        return False, self._local.reset_time(rate, kind, digest)

    async def _shared_hit(
        self, shared: aio.strategies.MovingWindowRateLimiter, rate: RateLimitItem, kind: str, digest: str
    ) -> tuple[bool, float] | None:
        """(allowed, reset time) from Redis; None when Redis failed or is paused after a failure."""
        if time.monotonic() < self._paused_until:
            FALLBACKS.inc()
            return None
        try:
            async with asyncio.timeout(2 * REDIS_TIMEOUT):  # the socket timeouts bound each step; this, all of them
                if await shared.hit(rate, kind, digest):
                    return True, 0.0
                return False, (await shared.get_window_stats(rate, kind, digest)).reset_time
        except (StorageError, OSError) as exc:  # TimeoutError is an OSError
            FALLBACKS.inc()
            now = time.monotonic()
            if now >= self._paused_until:  # one warning per outage, not one per request that was waiting
                cause = exc.storage_error if isinstance(exc, StorageError) else exc
                log.warning("rate limits: Redis failed (%s); counting in this process for %.0f s",
                            type(cause).__name__, REDIS_PAUSE_SECONDS)
            self._paused_until = now + REDIS_PAUSE_SECONDS
            return None

    async def close(self) -> None:
        """Close the connections to Redis, if any."""
        if self._pool is not None:
            await self._pool.aclose()
