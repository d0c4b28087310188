"""The moving window of `limits`, in this process's memory, at a constant cost a hit.

`limits`' own MemoryStorage expires entries from a timer thread that it starts again whenever the last one has
finished: under load that is a new thread every few requests, about 4 ms of CPU each time on the banner's POST
(measured with cProfile, 1.5 s of thread starts in 400 hits). This keeps, per key, the moments of its last
`amount` hits in a bounded deque, so a hit is O(1) and memory is bounded by MAX_KEYS x the rate; the least
recently used key is forgotten first. tests/services/test_local_window.py shows it allows and refuses exactly
as `limits`' MovingWindowRateLimiter does, hit for hit, and reports the same reset time.
"""

import time
from collections import OrderedDict, deque

from limits import RateLimitItem

# Keys held at once (addresses and publishable keys); a forgotten key starts a fresh window, like an idle one.
MAX_KEYS = 100_000


class LocalWindow:
    """hit() and reset_time() with the semantics of limits.strategies.MovingWindowRateLimiter."""

    def __init__(self, *, clock=time.time, max_keys: int = MAX_KEYS) -> None:
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._clock = clock
        self._max_keys = max_keys

    def _window(self, rate: RateLimitItem, identifiers: tuple[str, ...]) -> deque[float]:
        key = rate.key_for(*identifiers)
        window = self._hits.get(key)
        if window is None:
            window = self._hits[key] = deque(maxlen=rate.amount)
            if len(self._hits) > self._max_keys:
                self._hits.popitem(last=False)
        else:
            self._hits.move_to_end(key)
        return window

    def hit(self, rate: RateLimitItem, *identifiers: str) -> bool:
        """Count a hit and say whether it is allowed: fewer than `amount` hits in the last `expiry` seconds."""
        window = self._window(rate, identifiers)
        now = self._clock()
        if len(window) == rate.amount and window[0] >= now - rate.get_expiry():
            return False
        window.append(now)  # the deque drops the oldest hit, which has left the window
        return True

    def reset_time(self, rate: RateLimitItem, *identifiers: str) -> float:
        """When the oldest hit in the window leaves it (as limits' get_window_stats().reset_time)."""
        window = self._window(rate, identifiers)
        now = self._clock()
        if not window:
            return now + rate.get_expiry()
        return window[0] + rate.get_expiry()
