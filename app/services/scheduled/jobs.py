"""Scheduled work inside `consentd serve`, in every process: webhook delivery (every second, at once while there is
work) and the requests' job (every minute: the rest of erasures whose holds lapsed, request.due_soon).

Webhook delivery is safe to run in several processes at once (several workers, several replicas): a tenant's events
are enqueued under the lock of its cursor row, and deliveries are claimed with SKIP LOCKED (notifications/dispatch.py),
so each event is enqueued once and each attempt made by one process. The requests' job runs in one process at a
time: on PostgreSQL under a transaction-scoped advisory lock that the others skip on; on SQLite its transaction holds
the one write lock. What it does is marked on the rows (an erasure finished, a notice sent), so it is done once.
`consentd jobs run` runs the same steps once, until nothing is left to do.
"""

import asyncio
import contextlib
import logging
import time
from typing import Any

import httpx
import sqlalchemy as sa

from app import metrics
from app.db import Database
from app.services import requests
from app.services.kit import is_postgres
from app.services.notifications import dispatch

log = logging.getLogger("consentd.jobs")
INTERVAL = 1.0
# Seconds between runs of the requests' job; and the key of its advisory lock (one runner across processes).
REQUESTS_EVERY = 60.0
REQUESTS_LOCK = 0x636F6E73656E7464  # "consentd"


async def requests_job(database: Database, *, region: str) -> dict[str, int] | None:
    """The requests' scheduled work (requests.scheduled), by one process at a time; None when another had it."""
    started, outcome = time.perf_counter(), "ok"
    try:
        async with database.transaction() as session:
            if is_postgres(session):
                taken = (await session.execute(sa.text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": REQUESTS_LOCK})).scalar()
                if not taken:
                    outcome = "skipped"
                    return None
            return await requests.scheduled(session, region=region)
    except Exception:
        outcome = "error"
        raise
    finally:
        metrics.job_ran("requests", time.perf_counter() - started, outcome)


async def run_once(
    database: Database, sender: dispatch.Sender, client: httpx.AsyncClient | None = None
) -> dict[str, Any]:
    """Enqueue every tenant's new events, then send what is due; the counts."""
    started = time.perf_counter()
    outcome = "ok"
    try:
        enqueued = await dispatch.enqueue(database)
        attempted = await dispatch.deliver(database, sender, client=client)
    except Exception:
        outcome = "error"
        raise
    finally:
        metrics.job_ran("webhooks", time.perf_counter() - started, outcome)
    return {"enqueued": enqueued, "attempted": attempted}


class Runner:
    """The loop `consentd serve` runs in each process (CONSENTD_JOBS, default on): every round enqueues new events,
    then starts a delivery task for each endpoint with deliveries due that has none running, so that a slow
    receiver holds up nobody else's."""

    def __init__(self, database: Database, sender: dispatch.Sender, *, region: str, interval: float = INTERVAL) -> None:
        self.database, self.sender, self.interval, self.region = database, sender, interval, region
        self._requests_due = 0.0
        self._task: asyncio.Task | None = None
        self._sending: dict[Any, asyncio.Task] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="consentd-jobs")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._sending.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        # One client for the process's life: connections to a receiver stay open from one round to the next.
        async with httpx.AsyncClient(timeout=self.sender.timeout, follow_redirects=False) as client:
            while True:
                busy = False
                started = time.perf_counter()
                outcome = "ok"
                try:
                    if time.monotonic() >= self._requests_due:
                        self._requests_due = time.monotonic() + REQUESTS_EVERY
                        await requests_job(self.database, region=self.region)
                    busy = bool(await dispatch.enqueue(self.database))
                    for webhook_id in await dispatch.due_endpoints(self.database):
                        if webhook_id not in self._sending:
                            busy = True
                            self._spawn(webhook_id, client)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the next round tries again; a database that is down is not a crash
                    outcome = "error"
                    log.warning("scheduled work failed: %s", type(exc).__name__)
                metrics.job_ran("webhooks", time.perf_counter() - started, outcome)
                # With work on hand the next round starts at once (yielding to requests first); idle, it waits.
                await asyncio.sleep(0.05 if busy else self.interval)

    def _spawn(self, webhook_id: Any, client: httpx.AsyncClient) -> None:
        task = asyncio.create_task(dispatch.deliver_endpoint(self.database, self.sender, webhook_id, client))
        self._sending[webhook_id] = task

        def done(finished: asyncio.Task) -> None:
            self._sending.pop(webhook_id, None)
            if not finished.cancelled() and finished.exception() is not None:
                log.warning("webhook delivery failed: %s", type(finished.exception()).__name__)

        task.add_done_callback(done)
