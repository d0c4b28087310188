"""`consentd import`: a file of consent records, read and stored in chunks, with a progress bar."""

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from app.config import Settings
from app.db import Database
from app.errors import Conflict, Unprocessable
from app.services import imports
from app.services.identifiers import IdentifierKeys

# A chunk that lost a race for a new identifier to a concurrent writer is tried again this many times.
RETRIES = 3


@dataclass
class Outcome:
    lines: int = 0
    imported: int = 0
    skipped: int = 0
    events: int = 0
    errors: list[dict] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        if self.errors:
            bad = len({e["line"] for e in self.errors})
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


async def import_file(
    settings: Settings, file: Path, *, tenant: str, chunk_size: int, jobs: int, dry_run: bool, actor: str
) -> Outcome:
    """Import `file` chunk by chunk, `jobs` chunks at a time, each in a transaction of its own."""
    database = await Database.open(settings)
    keys = IdentifierKeys(settings.identifier_key, settings.default_region)
    outcome = Outcome(dry_run=dry_run)
    started = time.perf_counter()
    # After the first bad chunk nothing more is stored, but the rest is still checked so every bad line is listed.
    checking_only = dry_run

    async def one(lines: list[tuple[int, bytes]]) -> None:
        nonlocal checking_only
        for attempt in range(RETRIES + 1):
            try:
                async with database.transaction() as session:
                    result = await imports.run(
                        session, keys, tenant=tenant, actor=actor, lines=lines, dry_run=checking_only
                    )
                break
            except Conflict:
                if attempt == RETRIES:
                    raise
            except Unprocessable as exc:
                outcome.errors += exc.extra["errors"]
                checking_only = True
                return
        outcome.imported += result.imported
        outcome.skipped += result.skipped
        outcome.events += result.events

    progress = Progress(
        TextColumn("[bold]importing[/bold]" if not dry_run else "[bold]checking[/bold]"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[lines]:,} lines, {task.fields[imported]:,} new, {task.fields[skipped]:,} skipped"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
        # stderr, like every other message of the CLI: stdout stays free for what a script may read.
        console=Console(stderr=True),
    )
    try:
        with progress:
            task = progress.add_task("import", total=file.stat().st_size, lines=0, imported=0, skipped=0)
            in_flight: set[asyncio.Task] = set()
            for lines, taken in chunks(file, chunk_size):
                if len(in_flight) >= jobs:
                    done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    for finished in done:
                        finished.result()
                outcome.lines += len(lines)
                job = asyncio.create_task(one(lines))
                job.add_done_callback(
                    lambda _job, taken=taken: progress.update(
                        task, advance=taken, lines=outcome.lines, imported=outcome.imported, skipped=outcome.skipped
                    )
                )
                in_flight.add(job)
            for finished in asyncio.as_completed(in_flight):
                await finished
    finally:
        await database.close()
    outcome.errors.sort(key=lambda e: e["line"])
    outcome.seconds = time.perf_counter() - started
    return outcome
