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

from app import metrics
from app.db import Database
from app.services.notifications import dispatch

log = logging.getLogger("consentd.jobs")
INTERVAL = 1.0


async def run_once(database: Database, sender: dispatch.Sender) -> dict[str, Any]:
    """Enqueue every tenant's new events, then send what is due; the counts."""
    started = time.perf_counter()
    outcome = "ok"
    try:
        enqueued = await dispatch.enqueue(database)
        attempted = await dispatch.deliver(database, sender)
    except Exception:
        outcome = "error"
        raise
    finally:
        metrics.job_ran("webhooks", time.perf_counter() - started, outcome)
    return {"enqueued": enqueued, "attempted": attempted}


class Runner:
    """The loop `consentd serve` runs in each process (CONSENTD_JOBS, default on)."""

    def __init__(self, database: Database, sender: dispatch.Sender, interval: float = INTERVAL) -> None:
        self.database, self.sender, self.interval = database, sender, interval
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="consentd-jobs")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await run_once(self.database, self.sender)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next round tries again; a database that is down is not a crash
                log.warning("scheduled work failed: %s", type(exc).__name__)
            await asyncio.sleep(self.interval)
