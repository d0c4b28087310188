"""Request-rate limits for the public endpoints, per client IP and per publishable key (the `limits` library)."""

import math
import time

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from app.errors import TooManyRequests


class Throttle:
    """Moving-window limits kept in this process's memory: with N server processes a client gets up to N times
    the rate, which is still a bound; a shared store (Redis) would make it exact."""

    def __init__(self, *, per_ip: str, per_key: str) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._rates = {"ip": parse(per_ip), "key": parse(per_key)}

    def hit(self, kind: str, identity: str) -> None:
        """Count one request of `identity` ("ip" or "key"); 429 with Retry-After once its rate is spent."""
        rate = self._rates[kind]
        if self._limiter.hit(rate, kind, identity):
            return
        reset = self._limiter.get_window_stats(rate, kind, identity).reset_time
        retry_after = max(1, math.ceil(reset - time.time()))
        raise TooManyRequests(f"too many requests from this {'address' if kind == 'ip' else 'key'}; retry later",
                              retry_after=retry_after)
