"""Prometheus metrics: request latency by route, check decisions by reason."""

from prometheus_client import Counter, Histogram

REQUEST_LATENCY = Histogram(
    "consentd_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CHECK_DECISIONS = Counter("consentd_check_decisions_total", "Check answers given, by reason code", ["reason", "allowed"])
