"""`consentd import` of 1M consent records on PostgreSQL, and a re-run of the same file that must store nothing.

    .venv/bin/python bench/import_throughput.py                         # 1M lines
    .venv/bin/python bench/import_throughput.py --lines 20000 --chunk-size 5000
    .venv/bin/python bench/import_throughput.py --tuned                 # on a private, tuned cluster

1. Writes an NDJSON file of --lines `POST /v1/consents` bodies, each for a new subject `imp<N>@import.example`:
   a marketing/email decision (90% granted), every tenth line also a market_research/email one, captured during
   2025, source `legacy-crm`.
2. Creates the database `consentd_import_bench` afresh (migrated, tenant `bench` with the default catalogue).
3. Times `consentd import FILE --tenant bench` (CONSENTD_DATABASE_URL pointing at it; --chunk-size passed on when
   given), sampling the import process's RSS; counts what it stored (consent_events, consent_state, subjects, ...).
4. Times the same import again: it must store nothing new (the counts, consent_events first, must not change).
5. The floor, for reference: the rows the import stored, dumped with COPY and COPYed into a fresh database at the
   same migration (same indexes and foreign keys) in as many transactions as the import's chunks, 2 at a time:
   what PostgreSQL alone needs to take them, with nothing to compute, check or look up.
6. Prints both times, the rows stored, the floor, and whether the import took under 90 s. It only reports: a missed
   target does not change the exit status (2 when `consentd import` does not exist yet).

With --tuned it all runs on a PostgreSQL cluster of its own with production settings (bench/tuned_cluster.py),
started before step 2 and stopped at the end; otherwise on the server BENCH_ADMIN_URL names.

The commands' output goes to bench/results/import-*.log, the JSON summary to bench/results/.
"""

import argparse
import asyncio
import bisect
import contextlib
import io
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
from harness import RESULTS, BenchDatabase, RssSampler, Sampler, consentd_command, mib, run_main, write_results
from tuned_cluster import add_tuned_argument, server_settings, tuned_cluster

from app.cli import IMPORT_CHUNK_SIZE, IMPORT_WRITERS
from bench.check_throughput import postgres_backend_cpu

DB_NAME = "consentd_import_bench"
TENANT = "bench"
TARGET_SECONDS = 90.0
# What an import stores, consent_events first: the re-run must leave every count as it was.
TABLES = ("consent_events", "consent_state", "consent_changes", "subjects", "subject_identifiers", "consent_imports")


def write_records(path: Path, lines: int) -> int:
    """The NDJSON file; the number of decisions in it (the consent_events a first import should store)."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    decisions = 0
    with path.open("wb") as out:
        batch = []
        for n in range(lines):
            body = {
                "subject": {"email": f"imp{n}@import.example"},
                "decisions": [
                    {"purpose": "marketing", "channel": "email", "status": "withdrawn" if n % 10 == 3 else "granted"}
                ],
                "captured_at": (start + timedelta(seconds=n * 31_536_000 // max(lines, 1))).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "source": "legacy-crm",
            }
            if n % 10 == 0:
                body["decisions"].append({"purpose": "market_research", "channel": "email", "status": "granted"})
            decisions += len(body["decisions"])
            batch.append(orjson.dumps(body, option=orjson.OPT_APPEND_NEWLINE))
            if len(batch) == 10_000:
                out.write(b"".join(batch))
                batch = []
        out.write(b"".join(batch))
    return decisions


@dataclass
class Run:
    label: str
    seconds: float
    exit_code: int
    peak_rss_mb: float
    cpu_seconds: float  # user + system of `consentd import` and its check workers
    postgres_cpu_seconds: float  # of the backends serving the bench database (sampled: a lower bound)
    wal: dict[str, float]  # the whole server's WAL and checkpoints during the run (pg_stat_wal, pg_stat_bgwriter)
    counts: dict[str, int]
    output_tail: list[str] = field(default_factory=list)


def run_import(database: BenchDatabase, label: str, source: Path, options: list[str], log: Path) -> Run:
    command = [*consentd_command(), "import", str(source), "--tenant", TENANT, *options]
    with log.open("ab") as out:
        out.write(f"\n--- {datetime.now().isoformat()} {label}: {' '.join(command)}\n".encode())
        out.flush()
        wal_before = asyncio.run(wal_stats(database))
        started = time.perf_counter()
        cpu_before = _children_cpu()
        process = subprocess.Popen(command, env=database.env, stdout=out, stderr=subprocess.STDOUT)
        with RssSampler(process.pid) as sampler, BackendCpu(DB_NAME) as backends:
            exit_code = process.wait()
        seconds = time.perf_counter() - started
        cpu = _children_cpu() - cpu_before
    time.sleep(1.5)  # the import's backends report their WAL statistics as they exit
    wal = {name: value - wal_before[name] for name, value in asyncio.run(wal_stats(database)).items()}
    counts = asyncio.run(count_rows(database))
    tail = log.read_text(errors="replace").rstrip().splitlines()[-5:]
    return Run(label, seconds, exit_code, mib(sampler.peak), cpu, backends.seconds, wal, counts, tail)


async def wal_stats(database: BenchDatabase) -> dict[str, float]:
    """The server's WAL written so far (bytes, full-page images) and checkpoints (on time, requested)."""
    connection = await asyncpg.connect(database.dsn)
    try:
        row = await connection.fetchrow(
            "SELECT w.wal_bytes::float8 AS wal_bytes, w.wal_fpi::float8 AS wal_fpi,"
            " b.checkpoints_timed::float8 AS checkpoints_timed, b.checkpoints_req::float8 AS checkpoints_req"
            " FROM pg_stat_wal w, pg_stat_bgwriter b"
        )
    finally:
        await connection.close()
    return dict(row)


class BackendCpu(Sampler):
    """CPU seconds of the local PostgreSQL backends serving a database, summed over the backends seen (each
    sampled every 0.2 s until it exits: what it did after its last sample is missed)."""

    def __init__(self, db_name: str) -> None:
        super().__init__(0.2)
        self.db_name = db_name
        self.latest: dict[str, float] = {}

    def sample(self) -> None:
        self.latest.update(postgres_backend_cpu(self.db_name))

    @property
    def seconds(self) -> float:
        return sum(self.latest.values())


def _children_cpu() -> float:
    """CPU seconds of this process's waited-for children and theirs (the import's workers, once it has waited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# The reference: the rows the import stored, in the order the foreign keys need, COPYed into an empty database.
FLOOR_DB = "consentd_import_floor"
FLOOR_TABLES = (
    "subjects", "subject_identifiers", "ledger_chains", "consent_events", "consent_state", "consent_changes",
    "consent_imports",
)


@dataclass
class Floor:
    seconds: float
    postgres_cpu_seconds: float
    chunks: int
    rows: int


async def dump_rows(database: BenchDatabase) -> dict[str, list[bytes]]:
    """Every row of FLOOR_TABLES in COPY's text format."""
    connection = await asyncpg.connect(database.dsn)
    dumps: dict[str, list[bytes]] = {}
    try:
        for table in FLOOR_TABLES:
            out = bytearray()

            async def take(data: bytes, out: bytearray = out) -> None:
                out.extend(data)

            await connection.copy_from_table(table, output=take, format="text")
            dumps[table] = bytes(out).splitlines(keepends=True)
    finally:
        await connection.close()
    return dumps


async def subject_columns() -> dict[str, int]:
    """The position of each FLOOR_TABLES table's subject id (`id` in subjects) among its columns; -1: none."""
    floor = BenchDatabase(FLOOR_DB)
    connection = await asyncpg.connect(floor.dsn)
    try:
        positions = {}
        for table in FLOOR_TABLES:
            names = [row[0] for row in await connection.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped"
                " ORDER BY attnum", table,
            )]
            key = "id" if table == "subjects" else "subject_id"
            positions[table] = names.index(key) if key in names else -1
        return positions
    finally:
        await connection.close()


def chunk_rows(dumps: dict[str, list[bytes]], positions: dict[str, int], chunks: int) -> list[dict[str, bytes]]:
    """The rows in `chunks` transactions' worth, split by ranges of subject ids so that each chunk holds its subjects
    with everything that references them, as each of the import's chunks did (rows without a subject: evenly)."""
    ids = sorted(line.split(b"\t", 1)[0] for line in dumps["subjects"])
    bounds = [ids[len(ids) * k // chunks] for k in range(1, chunks)]
    parts: list[dict[str, list[bytes]]] = [{table: [] for table in FLOOR_TABLES} for _ in range(chunks)]
    for table, lines in dumps.items():
        column = positions[table]
        for n, line in enumerate(lines):
            part = (n * chunks // len(lines) if column < 0
                    else bisect.bisect_right(bounds, line.split(b"\t", column + 1)[column]))
            parts[part][table].append(line)
    return [{table: b"".join(lines) for table, lines in part.items()} for part in parts]


def copy_floor(dumps: dict[str, list[bytes]], *, chunks: int, writers: int) -> Floor:
    """The import's PostgreSQL floor: the same rows in as many transactions, `writers` at a time, each table's sent
    by COPY straight into it (no upsert, no temporary table, nothing computed), under the same indexes and foreign
    keys (a fresh database at the same migration)."""
    floor = BenchDatabase(FLOOR_DB)
    asyncio.run(floor.create([TENANT]))
    parts = chunk_rows(dumps, asyncio.run(subject_columns()), chunks)
    rows = sum(len(lines) for lines in dumps.values())
    order = iter(parts)

    async def writer(connection: asyncpg.Connection) -> None:
        for part in order:
            async with connection.transaction():
                for table in FLOOR_TABLES:
                    if part[table]:
                        await connection.copy_to_table(table, source=io.BytesIO(part[table]), format="text")

    async def run() -> float:
        connections = [await asyncpg.connect(floor.dsn) for _ in range(writers)]
        try:
            started = time.perf_counter()
            await asyncio.gather(*(writer(connection) for connection in connections))
            return time.perf_counter() - started
        finally:
            for connection in connections:
                await connection.close()

    try:
        with BackendCpu(FLOOR_DB) as backends:
            seconds = asyncio.run(run())
        return Floor(seconds, backends.seconds, chunks, rows)
    finally:
        asyncio.run(floor.drop())


async def count_rows(database: BenchDatabase) -> dict[str, int]:
    return {table: await database.count(table) for table in TABLES}


def import_available(database: BenchDatabase) -> bool:
    found = subprocess.run(
        [*consentd_command(), "import", "--help"], env=database.env, capture_output=True, text=True, check=False,
        timeout=60,
    )
    return found.returncode == 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="records in the file (default 1,000,000)")
    parser.add_argument("--chunk-size", type=int, help="passed on to `consentd import` (default: its own)")
    parser.add_argument("--jobs", type=int, help="passed on to `consentd import` (default: its own)")
    parser.add_argument("--file", type=Path, help="write the NDJSON file here and keep it (default: a temporary one)")
    add_tuned_argument(parser)
    args = parser.parse_args()
    if args.lines < 1 or any(value is not None and value < 1 for value in (args.chunk_size, args.jobs)):
        parser.error("--lines, --chunk-size and --jobs must be positive")
    return args


def print_run(run: Run, before: dict[str, int]) -> None:
    added = ", ".join(f"{table} +{run.counts[table] - before[table]:,}" for table in TABLES)
    print(f"  {run.label:<8} {run.seconds:7.1f} s  exit {run.exit_code}  CPU {run.cpu_seconds:.1f} s, PostgreSQL"
          f" {run.postgres_cpu_seconds:.1f} s  peak RSS"
          f" {run.peak_rss_mb:.0f} MB  {added}")
    wal = run.wal
    print(f"      WAL {mib(wal['wal_bytes']):,.0f} MB, {wal['wal_fpi']:,.0f} full-page images, checkpoints"
          f" {wal['checkpoints_timed']:.0f} on time + {wal['checkpoints_req']:.0f} forced (whole server)")
    for line in run.output_tail if run.exit_code else run.output_tail[-1:]:
        print(f"      | {line}")


def main() -> int:
    args = parse_args()
    with tuned_cluster() if args.tuned else contextlib.nullcontext():
        return measure(args)


def measure(args: argparse.Namespace) -> int:
    database = BenchDatabase(DB_NAME)
    if not import_available(database):
        print("error: this consentd has no `import` command yet (`consentd import --help` fails)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="consentd-import-") as scratch:
        source = args.file or Path(scratch) / "consents.ndjson"
        t0 = time.perf_counter()
        decisions = write_records(source, args.lines)
        print(f"wrote {args.lines:,} records ({decisions:,} decisions, {mib(source.stat().st_size):.0f} MB) to"
              f" {source} in {time.perf_counter() - t0:.1f} s")
        print(f"creating {DB_NAME}", flush=True)
        asyncio.run(database.create([TENANT]))
        postgres = asyncio.run(server_settings(database.dsn))
        print(f"PostgreSQL: {postgres}")
        empty = asyncio.run(count_rows(database))
        RESULTS.mkdir(parents=True, exist_ok=True)
        log = RESULTS / f"import-{datetime.now().strftime('%Y%m%d-%H%M%S')}.log"
        print(f"importing (output in {log})", flush=True)
        options = [f"--{name.replace('_', '-')}={value}" for name, value in
                   (("chunk_size", args.chunk_size), ("jobs", args.jobs)) if value is not None]
        first = run_import(database, "import", source, options, log)
        print(f"import: {first.seconds:.1f} s; importing the same file again", flush=True)
        again = run_import(database, "re-run", source, options, log)
    chunks = -(-args.lines // (args.chunk_size or IMPORT_CHUNK_SIZE))
    print(f"the floor: the same rows COPYed into {FLOOR_DB} in {chunks} transactions, {IMPORT_WRITERS} at a time",
          flush=True)
    floor = copy_floor(asyncio.run(dump_rows(database)), chunks=chunks, writers=IMPORT_WRITERS)

    print(f"\n{args.lines:,} records, {decisions:,} decisions, consentd import {' '.join(options) or '(defaults)'}")
    print_run(first, empty)
    print_run(again, first.counts)
    events = first.counts["consent_events"] - empty["consent_events"]
    stored_all = first.exit_code == 0 and events == decisions
    unchanged = again.exit_code == 0 and again.counts == first.counts
    met = stored_all and first.seconds < TARGET_SECONDS
    print(f"  first import stored one event per decision      {'yes' if stored_all else 'NO'}"
          f" ({events:,} events for {decisions:,} decisions)")
    print(f"  re-run stored nothing new                        {'yes' if unchanged else 'NO'}")
    print(f"  import of {args.lines:,} records {first.seconds:7.1f} s  ({args.lines / first.seconds:,.0f} records/s)"
          f"   target < {TARGET_SECONDS:g} s: {'MET' if met else 'NOT MET'}")
    print(f"  re-run                          {again.seconds:7.1f} s  ({args.lines / again.seconds:,.0f} records/s)")
    print(f"  floor: the {floor.rows:,} rows COPYed {floor.seconds:7.1f} s  (PostgreSQL CPU {floor.postgres_cpu_seconds:.1f} s;"
          f" the import took {first.seconds / floor.seconds:.1f}x)")
    print(f"total time {time.perf_counter() - started:.0f} s")
    print(f"PostgreSQL: {postgres}")
    write_results("import_throughput", {
        "args": {**vars(args), "file": str(args.file) if args.file else None}, "postgres": postgres, "decisions": decisions,
        "empty": empty, "import": asdict(first), "rerun": asdict(again), "stored_all": stored_all,
        "rerun_unchanged": unchanged, "met": met, "floor": asdict(floor),
    })
    return 0


if __name__ == "__main__":
    run_main(main)
