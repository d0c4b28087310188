"""Scheduled work inside `consentd serve`: webhook delivery, every second, in every process.

Each step is safe to run in several processes at once (several workers, several replicas): a tenant's events are
enqueued under the lock of its cursor row, and deliveries are claimed with SKIP LOCKED (notifications/dispatch.py),
so each event is enqueued once and each attempt made by one process. `consentd jobs run` runs the same steps once.
"""

import asyncio
import contextlib
import logging
import time
from typing import Any

import httpx

from app import metrics
from app.db import Database
from app.services.notifications import dispatch

log = logging.getLogger("consentd.jobs")
INTERVAL = 1.0


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

    def __init__(self, database: Database, sender: dispatch.Sender, interval: float = INTERVAL) -> None:
        self.database, self.sender, self.interval = database, sender, interval
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
