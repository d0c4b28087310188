"""banner/local_window.LocalWindow agrees with limits' MovingWindowRateLimiter (the library it stands in for) on
every hit: allowed or refused, and the Retry-After a refusal gives, under one clock."""

import contextlib
import math
import types
from collections.abc import Iterator

import limits.storage.memory
from hypothesis import given, settings
from hypothesis import strategies as st
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from app.services.banner.local_window import LocalWindow

steps = st.lists(
    st.tuples(st.sampled_from([0.0, 0.0013, 0.217, 0.4999, 0.9991, 1.0007, 1.531, 3.17, 7.3]), st.sampled_from(["a", "b", "c"])),
    min_size=1, max_size=80,
)


class Clock:
    def __init__(self) -> None:
        self.at = 1_800_000_000.0

    def now(self) -> float:
        return self.at


@contextlib.contextmanager
def one_clock() -> Iterator[Clock]:
    """limits' memory storage reads `time.time()` through its module's `time`: give that module this clock."""
    clock = Clock()
    original = limits.storage.memory.time
    limits.storage.memory.time = types.SimpleNamespace(time=clock.now)
    try:
        yield clock
    finally:
        limits.storage.memory.time = original


@settings(max_examples=400, deadline=None)
@given(steps=steps, amount=st.integers(1, 5), seconds=st.sampled_from([1, 2, 5]))
def test_local_window_answers_as_limits_does(steps, amount, seconds):
    rate = parse(f"{amount}/{seconds} second")
    with one_clock() as clock:
        library, ours = MovingWindowRateLimiter(MemoryStorage()), LocalWindow(clock=clock.now)
        for delay, key in steps:
            clock.at += delay
            allowed = library.hit(rate, "ip", key)
            assert ours.hit(rate, "ip", key) == allowed, (delay, key)
            if not allowed:  # the Retry-After the throttle derives from each reset time
                # (delays that never add up to a whole window: a hit exactly `expiry` old is counted by limits'
                # hit() but not by its window statistics, a boundary no real clock lands on)
                ours_after = max(1, math.ceil(ours.reset_time(rate, "ip", key) - clock.at))
                theirs = max(1, math.ceil(library.get_window_stats(rate, "ip", key).reset_time - clock.at))
                assert ours_after == theirs


def test_idle_keys_are_forgotten_oldest_first():
    rate = parse("1/minute")
    window = LocalWindow(max_keys=2)
    assert window.hit(rate, "ip", "a") and window.hit(rate, "ip", "b")
    assert not window.hit(rate, "ip", "a")  # refused, and a is now the most recently used key
    assert window.hit(rate, "ip", "c")  # a third key: b, the least recently used, is forgotten
    assert window.hit(rate, "ip", "b")  # a fresh window for b
    assert not window.hit(rate, "ip", "c")
