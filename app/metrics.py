"""Prometheus metrics: request latency by route, check decisions by reason.

Under `consentd serve --workers N` every worker writes its metrics to files in PROMETHEUS_MULTIPROC_DIR (serve sets
it up) and /metrics adds up the files of all of them, whichever worker answers.
"""

import os
from functools import lru_cache

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

# Read once, as prometheus_client itself does at import: the mode cannot change while the process runs.
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")

REQUEST_LATENCY = Histogram(
    "consentd_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CHECK_DECISIONS = Counter("consentd_check_decisions_total", "Check answers given, by reason code", ["reason", "allowed"])
# Scheduled work (services/notifications/jobs.py): each job's runs by outcome, how long the last took, and when.
JOB_RUNS = Counter("consentd_job_runs_total", "Runs of a scheduled job, by outcome", ["job", "outcome"])
JOB_LAST_SECONDS = Gauge("consentd_job_last_duration_seconds", "Duration of a job's last run", ["job"], multiprocess_mode="max")
JOB_LAST_RUN = Gauge("consentd_job_last_run_timestamp_seconds", "When a job last ran (Unix time)", ["job"], multiprocess_mode="max")


@lru_cache(maxsize=1024)
def request_latency(method: str, route: str, status: str) -> Histogram:
    """The labelled histogram (labels() is a locked lookup, too slow to repeat on every request)."""
    return REQUEST_LATENCY.labels(method, route, status)


@lru_cache(maxsize=64)
def check_decision(reason: str, allowed: bool) -> Counter:
    return CHECK_DECISIONS.labels(reason, "true" if allowed else "false")


def job_ran(job: str, seconds: float, outcome: str) -> None:
    JOB_RUNS.labels(job, outcome).inc()
    JOB_LAST_SECONDS.labels(job).set(seconds)
    JOB_LAST_RUN.labels(job).set_to_current_time()


def exposition() -> bytes:
    """The Prometheus text of this process's metrics, or in multiprocess mode of every worker's."""
    if MULTIPROCESS_DIR is None:
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=MULTIPROCESS_DIR)
    return generate_latest(registry)


def process_exit() -> None:
    """A worker stops: its live gauges leave the sum (its counters and histograms stay counted)."""
    if MULTIPROCESS_DIR is not None:
        multiprocess.mark_process_dead(os.getpid(), path=MULTIPROCESS_DIR)
