"""`consentd import`: a file of consent records, read and stored in chunks, with a progress bar.

Checking a line (JSON, purposes, email and phone normalisation, blind index) is CPU work: worker processes
do it for several chunks ahead, while this process stores the chunks, one transaction each, in file order.
"""

import asyncio
import gc
import multiprocessing
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from app.config import Settings
from app.db import Database
from app.errors import Conflict, Unprocessable
from app.services import purposes
from app.services.ledger import imports
from app.services.purposes import Rule
from app.services.subjects import IdentifierKeys

# A chunk that lost a race for a new identifier to a concurrent writer is tried again this many times.
RETRIES = 3
KEPT_ERRORS = 100

_worker_keys: IdentifierKeys | None = None


def _start_worker(secret: str, region: str) -> None:
    global _worker_keys
    _worker_keys = IdentifierKeys(secret, region)


def _check(lines: list[tuple[int, bytes]], rules: dict[str, Rule], tenant: str, latest: datetime) -> imports.Checked:
    assert _worker_keys is not None, "_start_worker sets the keys in each worker process"
    # A chunk makes tens of thousands of objects and no cycles worth a collection: a quarter less time without.
    gc.disable()
    try:
        return imports.check_lines(lines, rules=rules, keys=_worker_keys, tenant=tenant, latest=latest)
    finally:
        gc.enable()


@dataclass
class Outcome:
    lines: int = 0
    imported: int = 0
    skipped: int = 0
    events: int = 0
    # The first KEPT_ERRORS errors (a file where every line is bad must not fill the memory), and counts of all.
    errors: list[dict] = field(default_factory=list)
    error_count: int = 0
    bad_lines: int = 0
    dry_run: bool = False
    seconds: float = 0.0

    def add_errors(self, errors: list[dict]) -> None:
        self.errors += errors[: max(0, KEPT_ERRORS - len(self.errors))]
        self.error_count += len(errors)
        self.bad_lines += len({e["line"] for e in errors})

    def summary(self) -> str:
        if self.error_count:
            bad = self.bad_lines
            stored = "nothing was stored" if self.dry_run or not self.imported else (
                f"{self.imported} records stored before the first bad chunk stay; fix the lines and run again"
            )
            return f"{bad} bad lines of {self.lines}; {stored}"
        if self.dry_run:
            return f"{self.lines} lines checked, all valid (dry run: nothing stored) in {self.seconds:.1f} s"
        return (
            f"{self.imported} records imported ({self.events} events), {self.skipped} already imported, "
            f"{self.lines} lines in {self.seconds:.1f} s"
        )


def chunks(file: Path, size: int) -> Iterator[tuple[list[tuple[int, bytes]], int]]:
    """Chunks of (line number, line) with the bytes they took, read as the file is consumed."""
    chunk: list[tuple[int, bytes]] = []
    taken = 0
    with file.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            taken += len(line)
            if line.strip():
                chunk.append((number, line))
            if len(chunk) >= size:
                yield chunk, taken
                chunk, taken = [], 0
    if chunk or taken:
        yield chunk, taken


def _progress(dry_run: bool) -> Progress:
    return Progress(
        TextColumn("[bold]checking[/bold]" if dry_run else "[bold]importing[/bold]"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[lines]:,} lines, {task.fields[imported]:,} new, {task.fields[skipped]:,} skipped"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        # stderr, like every other message of the CLI: stdout stays free for what a script may read.
        console=Console(stderr=True),
    )


async def import_file(
    settings: Settings,
    file: Path,
    *,
    tenant: str,
    chunk_size: int,
    jobs: int,
    writers: int,
    dry_run: bool,
    actor: str,
) -> Outcome:
    """Import `file` chunk by chunk: `jobs` processes check chunks ahead; chunks are stored in file order, up to
    `writers` transactions at a time (PostgreSQL works on one while this process prepares the next)."""
    database = await Database.open(settings)
    keys = IdentifierKeys(settings.identifier_key, settings.default_region)
    outcome = Outcome(dry_run=dry_run)
    started = time.perf_counter()
    # After the first bad chunk nothing more is stored, but the rest is still checked so every bad line is listed.
    checking_only = dry_run
    loop = asyncio.get_running_loop()
    workers = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(settings.identifier_key, settings.default_region),
    )

    async def store(lines: list[tuple[int, bytes]], checked: imports.Checked) -> None:
        nonlocal checking_only
        for attempt in range(RETRIES + 1):
            try:
                async with database.transaction() as session:
                    result = await imports.run(session, keys, tenant=tenant, actor=actor, lines=lines, checked=checked)
                break
            except Conflict:
                if attempt == RETRIES:
                    raise
            except Unprocessable as exc:  # found only when storing: an unknown subject_id, a taken identifier
                outcome.add_errors(exc.extra["errors"])
                checking_only = True
                return
        outcome.imported += result.imported
        outcome.skipped += result.skipped
        outcome.events += result.events

    ahead: deque[tuple[list, int, asyncio.Future]] = deque()
    storing: set[asyncio.Task] = set()
    # The chunks in flight are a few hundred thousand objects that live until stored: the collector's full passes
    # over them cost more than the import makes garbage in cycles. Off for the import, what came before frozen.
    gc.freeze()
    gc.disable()
    try:
        async with database.transaction(read_only=True) as session:
            # Read once for the whole file; each chunk takes the purposes' versions as they stand when it is stored.
            rules = await purposes.rules(session, tenant=tenant)
        latest = imports.latest_capture()
        with _progress(dry_run) as progress:
            # One stat of the local file, once, before the import starts.
            task = progress.add_task("import", total=file.stat().st_size, lines=0, imported=0, skipped=0)  # noqa: ASYNC240
            source = chunks(file, chunk_size)
            while True:
                # Keep the workers busy: a few chunks are being checked while one is stored.
                while len(ahead) < 2 * jobs and (chunk := next(source, None)) is not None:
                    lines, taken = chunk
                    ahead.append((lines, taken, loop.run_in_executor(workers, _check, lines, rules, tenant, latest)))
                if not ahead:
                    break
                lines, taken, pending = ahead.popleft()
                checked = await pending
                outcome.lines += len(lines)
                if checked.errors:
                    outcome.add_errors(checked.errors)
                    checking_only = True
                elif not checking_only:
                    if len(storing) >= writers:
                        done, storing = await asyncio.wait(storing, return_when=asyncio.FIRST_COMPLETED)
                        for finished in done:
                            finished.result()
                    storing.add(asyncio.ensure_future(store(lines, checked)))
                progress.update(
                    task, advance=taken, lines=outcome.lines, imported=outcome.imported, skipped=outcome.skipped
                )
            for stored in asyncio.as_completed(storing):
                await stored
            storing.clear()
            progress.update(task, lines=outcome.lines, imported=outcome.imported, skipped=outcome.skipped)
    finally:
        for job in storing:
            job.cancel()
        for _, _, pending in ahead:
            pending.cancel()
        workers.shutdown(cancel_futures=True)
        await database.close()
        gc.enable()
        gc.unfreeze()
    outcome.errors.sort(key=lambda e: e["line"])
    outcome.seconds = time.perf_counter() - started
    return outcome
