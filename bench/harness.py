"""What the campaign-scale benchmarks share: bench databases, a `consentd serve` to drive, tokens, memory sampling.

The seeded check database, the server wrapper and the helpers around them come from check_throughput.py; this
module adds what stream_throughput.py, changes_feed.py and import_throughput.py need on top.
"""

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

import psutil
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg

from app.config import Settings
from app.db import Database, asyncpg_dsn
from app.migrations import upgrade
from app.services import tenants
from app.services.purposes import catalogue
from bench import check_throughput
from bench.check_throughput import HOST, RESULTS, Server, free_port

__all__ = [
    "HOST", "RESULTS", "ROOT", "UNLIMITED", "BenchDatabase", "RssSampler", "Sampler", "Server", "add_wrk_arguments",
    "check_wrk_arguments", "consentd_command", "free_port", "mib", "mint_token", "percentile", "run_consentd",
    "run_main", "seed_check_database", "start_consentd", "start_uvicorn", "tree_cpu_seconds",
    "unlimited_public_rates", "write_results", "wrk_missing",
]


class BenchDatabase:
    """One bench database on the server BENCH_ADMIN_URL names, with the URLs and environment to reach it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.admin_url = os.environ.get("BENCH_ADMIN_URL", f"postgresql://root@{HOST}:5432/postgres")
        admin = make_url(self.admin_url)
        self.app_url = admin.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)
        self.dsn = asyncpg_dsn(self.app_url)
        self.settings = Settings(database_url=self.app_url, env="development")
        # PYTHONPATH: subprocesses import `app` from this checkout, whatever the venv's install points at.
        python_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        self.env = {
            **os.environ, "CONSENTD_DATABASE_URL": self.app_url, "CONSENTD_ENV": "development", "PYTHONPATH": python_path,
        }

    async def _admin(self, work: Callable[[asyncpg.Connection], Awaitable]):
        connection = await asyncpg.connect(self.admin_url)
        try:
            return await work(connection)
        finally:
            await connection.close()

    async def marker(self) -> str | None:
        """The comment on the database (what it was seeded with), None when it does not exist."""
        return await self._admin(lambda admin: admin.fetchval(
            "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = $1", self.name
        ))

    async def set_marker(self, marker: str) -> None:
        await self._admin(lambda admin: admin.execute(f"COMMENT ON DATABASE \"{self.name}\" IS '{marker}'"))

    async def create(self, tenant_keys: list[str]) -> None:
        """Drop the database if it exists, create it, migrate it, add the tenants with the default catalogue."""

        async def recreate(admin: asyncpg.Connection) -> None:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{self.name}"')

        await self._admin(recreate)
        await upgrade(self.app_url)
        database = await Database.open(self.settings)
        try:
            async with database.transaction() as session:
                for key in tenant_keys:
                    await tenants.ensure(session, key=key, name=key)
                    await catalogue.load(session, tenant=key, entries=catalogue.default())
        finally:
            await database.close()

    async def drop(self) -> None:
        """Drop the database (its open connections too) if it exists."""
        await self._admin(lambda admin: admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))

    async def count(self, table: str, tenant: str | None = None) -> int:
        connection = await asyncpg.connect(self.dsn)
        try:
            if tenant is None:
                return await connection.fetchval(f"SELECT count(*) FROM {table}")
            return await connection.fetchval(f"SELECT count(*) FROM {table} WHERE tenant_id = $1", tenant)
        finally:
            await connection.close()


async def seed_check_database(subjects: int, reseed: bool) -> tuple[BenchDatabase, float]:
    """check_throughput's database `consentd_bench` (tenant `bench`, `subject<N>@bench.example`), reused when
    it holds this seed already; the seconds spent seeding."""
    database = BenchDatabase(check_throughput.DB_NAME)
    seconds = await check_throughput.prepare_database(
        database.admin_url, database.app_url, database.settings, subjects, reseed
    )
    return database, seconds


def add_wrk_arguments(parser: argparse.ArgumentParser, *, warmup: int) -> None:
    """The options of every bench that drives wrk: --duration, --warmup, --connections, --threads."""
    parser.add_argument("--duration", type=int, default=10, help="seconds of each measured run (default 10)")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"seconds of the warm-up before each run (default {warmup})")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")


def check_wrk_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with the parser's error when the wrk options make no run."""
    if min(args.duration, args.threads) < 1 or args.warmup < 0 or args.connections < args.threads:
        parser.error("--duration and --threads must be positive, --warmup not negative, --connections at least --threads")


# The public endpoints' rate limits, far above anything one machine's load reaches: the benches measure the
# endpoints, not the limiter. Per second, not per minute: a moving window keeps one entry a hit for its whole
# window (production limits are small).
UNLIMITED = "100000000/second"


def unlimited_public_rates(database: "BenchDatabase") -> None:
    """Run consentd for `database` with its public rate limits out of the way."""
    database.env = {**database.env, "CONSENTD_PUBLIC_RATE_PER_IP": UNLIMITED, "CONSENTD_PUBLIC_RATE_PER_KEY": UNLIMITED}


def wrk_missing() -> bool:
    """True (having said how to install it) when wrk is not installed."""
    if shutil.which("wrk") is not None:
        return False
    print("error: wrk is not installed. Install it with:\n    apt-get install -y wrk", file=sys.stderr)
    return True


def consentd_command() -> list[str]:
    bin_dir = Path(sys.executable).parent
    if (bin_dir / "consentd").exists():
        return [str(bin_dir / "consentd")]
    return [sys.executable, "-c", "from app.cli import main; main()"]


def mint_token(database: BenchDatabase, tenant: str, scopes: str) -> str:
    return subprocess.run(
        [*consentd_command(), "token", "--tenant", tenant, "--scopes", scopes, "--ttl", "86400"],
        env=database.env, capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()


def run_consentd(database: BenchDatabase, *args: str) -> str:
    """What `consentd ARGS...` prints on stdout against the database, stripped; CalledProcessError on failure."""
    return subprocess.run(
        [*consentd_command(), *args], env=database.env, capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()


def start_consentd(database: BenchDatabase, name: str, label: str, path: str, workers: int = 1) -> Server:
    """`consentd serve --no-access-log` on a free port against the database, started and answering /healthz."""
    port = free_port()
    command = [*consentd_command(), "serve", "--host", HOST, "--port", str(port), "--no-access-log"]
    if workers != 1:  # as before for the callers that do not ask
        command += ["--workers", str(workers)]
    server = Server(name, label, command, path, database.env, port)
    server.start()
    return server


def start_uvicorn(database: BenchDatabase, name: str, label: str, factory: str, path: str, workers: int = 1) -> Server:
    """A reference app (`module:create_app`) on a free port, under exactly the uvicorn settings `consentd serve
    --no-access-log` uses (app/cli.py), started and answering /healthz."""
    port = free_port()
    command = [
        sys.executable, "-c",
        f"import uvicorn; uvicorn.run({factory!r}, factory=True, host={HOST!r}, port={port}, workers={workers},"
        " access_log=False, proxy_headers=True, server_header=False)",
    ]
    server = Server(name, label, command, path, database.env, port)
    server.start()
    return server


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its live children (uvicorn's workers, when there are several)."""
    total = 0.0
    try:
        process = psutil.Process(pid)
        for each in (process, *process.children(recursive=True)):
            try:
                times = each.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


class Sampler:
    """Calls `sample` every `interval` seconds in a thread, from entering the block to leaving it."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = 0.0

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "Sampler":
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class RssSampler(Sampler):
    """Samples the resident memory of a process (and its children) every `interval` seconds, in a thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(interval)
        self.process = psutil.Process(pid)
        self.samples: list[tuple[float, int]] = []

    def rss(self) -> int:
        try:
            total = self.process.memory_info().rss
            for child in self.process.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            return total
        except psutil.Error:
            return 0

    def sample(self) -> None:
        rss = self.rss()
        if rss:
            self.samples.append((time.perf_counter() - self._started, rss))

    @property
    def peak(self) -> int:
        return max((rss for _, rss in self.samples), default=0)


def mib(value: float) -> float:
    return value / 1_048_576


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of `values` (fraction in 0..1)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def write_results(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


def run_main(main: Callable[[], int]) -> None:
    """Exit with main()'s status; SIGTERM and SIGINT (even when started with SIGINT ignored, in the background)
    interrupt it as KeyboardInterrupt, which exits 130 once its `finally` clauses have stopped the servers."""
    import signal

    def interrupted(_signum, _frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    try:
        status = main()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        status = 130
    sys.exit(status)
