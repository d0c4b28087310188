"""Prometheus metrics: request latency by route, check decisions by reason."""

from functools import lru_cache

from prometheus_client import Counter, Histogram

REQUEST_LATENCY = Histogram(
    "consentd_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CHECK_DECISIONS = Counter("consentd_check_decisions_total", "Check answers given, by reason code", ["reason", "allowed"])


@lru_cache(maxsize=1024)
def request_latency(method: str, route: str, status: str) -> Histogram:
    """The labelled histogram (labels() is a locked lookup, too slow to repeat on every request)."""
    return REQUEST_LATENCY.labels(method, route, status)


@lru_cache(maxsize=64)
def check_decision(reason: str, allowed: bool) -> Counter:
    return CHECK_DECISIONS.labels(reason, "true" if allowed else "false")
