"""Throughput of POST /v1/checks on PostgreSQL, side by side with a bare FastAPI + asyncpg baseline.

    .venv/bin/python bench/check_throughput.py            # or: make bench

1. Creates (or reuses) the database `consentd_bench` on the server named by BENCH_ADMIN_URL, migrates it with
   consentd's migrations and seeds tenant `bench` (the default purpose catalogue) with --subjects subjects, each
   with an email identifier (blind index + sealed value), one consent_events row and the matching consent_state
   row for marketing/email. The data is reused by later runs unless --reseed (or --subjects changes).
2. Starts, one at a time, `consentd serve` and the bare app (bench/bare_app.py) under the same uvicorn settings
   (1 worker, no access log, uvloop/httptools as uvicorn picks them), and drives each with wrk: 32 connections,
   2 threads, random subjects among the seeded ones, a warm-up run then a measured run; the two alternate for
   --rounds rounds.
3. Prints req/s, p50/p90/p99 per run, the means, the ratio check/bare and whether the targets are met
   (ratio >= 0.8, check p99 < 25 ms). It only reports: a missed target does not change the exit status.

Everything listens on and talks to 127.0.0.1. Server logs and a JSON summary go to bench/results/.
"""

import argparse
import asyncio
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

import asyncpg
from sqlalchemy.engine import make_url

from app.config import Settings
from app.db import Database, asyncpg_dsn
from app.migrations import upgrade
from app.models.base import new_id
from app.services import tenants
from app.services.purposes import catalogue
from app.services.subjects.identifiers import IdentifierKeys, normalise

HOST = "127.0.0.1"
TENANT = "bench"
DB_NAME = "consentd_bench"
# 2: subject and event ids made as the app makes them (app.models.base.new_id: version 7) and the composite keys
# of migration 20261204_0007.
SEED_VERSION = 2
CHUNK = 50_000
CHECK_PATH = "/v1/checks"
BARE_PATH = "/lookup"
TARGET_RATIO = 0.8
TARGET_P99_MS = 25.0


def email_of(n: int) -> str:
    return f"subject{n}@bench.example"


# ----------------------------------------------------------------------------------------------------- seeding


def seed_marker(subjects: int, settings: Settings) -> str:
    key_id = hashlib.sha256(settings.identifier_key.encode()).hexdigest()[:12]
    return f"consentd-bench seed v{SEED_VERSION}: subjects={subjects} tenant={TENANT} identifier_key={key_id}"


async def _database_comment(admin: asyncpg.Connection) -> str | None:
    return await admin.fetchval(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1", DB_NAME
    )


async def prepare_database(admin_url: str, app_url: str, settings: Settings, subjects: int, reseed: bool) -> float:
    """Create, migrate and seed the bench database unless it holds this seed already; the seconds spent seeding."""
    marker = seed_marker(subjects, settings)
    admin = await asyncpg.connect(admin_url)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DB_NAME)
        if exists and not reseed and await _database_comment(admin) == marker:
            await upgrade(app_url)  # no-op at head; a newer migration is applied to the seeded data
            print(f"database {DB_NAME} already holds the seed ({subjects:,} subjects); --reseed to rebuild it")
            return 0.0
        if exists:
            print(f"dropping database {DB_NAME}")
            await admin.execute(f'DROP DATABASE "{DB_NAME}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DB_NAME}"')
    finally:
        await admin.close()

    started = time.perf_counter()
    await upgrade(app_url)
    print(f"migrated {DB_NAME} ({time.perf_counter() - started:.1f} s)")
    database = await Database.open(settings)
    try:
        async with database.transaction() as session:
            await tenants.ensure(session, key=TENANT, name="Benchmark")
            await catalogue.load(session, tenant=TENANT, entries=catalogue.default())
    finally:
        await database.close()
    await bulk_load(asyncpg_dsn(app_url), settings, subjects)
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f"COMMENT ON DATABASE \"{DB_NAME}\" IS '{marker}'")
    finally:
        await admin.close()
    elapsed = time.perf_counter() - started
    print(f"seeded {subjects:,} subjects in {elapsed:.1f} s")
    return elapsed


async def bulk_load(dsn: str, settings: Settings, subjects: int) -> None:
    """COPY subjects, identifiers, one marketing/email event each and its consent_state row."""
    keys = IdentifierKeys(settings.identifier_key, settings.default_region)
    assert normalise("email", email_of(12345), region="GB") == email_of(12345), "emails must be in normal form"
    rng = random.Random(20261122)
    now = datetime.now(UTC).replace(microsecond=0)
    connection = await asyncpg.connect(dsn)
    try:
        version = await connection.fetchval(
            "SELECT version FROM purposes WHERE tenant_id = $1 AND key = 'marketing'", TENANT
        )
        superuser = await connection.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        if superuser:
            # The rows are consistent by construction: skip the per-row foreign-key triggers during COPY.
            await connection.execute("SET session_replication_role = replica")
        timings = {"generate": 0.0, "copy": 0.0}
        began = time.perf_counter()
        async with connection.transaction():
            for start in range(0, subjects, CHUNK):
                t0 = time.perf_counter()
                subject_rows, identifier_rows, event_rows, state_rows = [], [], [], []
                for n in range(start, min(start + CHUNK, subjects)):
                    subject_id = new_id()
                    email = email_of(n)
                    created = now - timedelta(days=400, seconds=n)
                    subject_rows.append((subject_id, TENANT, "[]", created))
                    identifier_rows.append(
                        (TENANT, keys.blind_index(TENANT, "email", email), subject_id, "email", keys.seal(email), created)
                    )
                    seq = n + 1
                    event_id = new_id()
                    status = "granted" if rng.random() < 0.85 else "withdrawn"
                    # Within the marketing lifespan (365 days): granted consents are in force.
                    captured = now - timedelta(seconds=rng.randrange(60, 300 * 86_400))
                    event_rows.append(
                        (seq, event_id, TENANT, subject_id, "marketing", version, "email", status, captured, captured,
                         "bench-seed", "import", "privacy-2026-01", None, "bench-seed", None)
                    )
                    state_rows.append(
                        (TENANT, subject_id, "marketing", "email", status, captured, captured, seq, event_id, version,
                         "privacy-2026-01", 0)
                    )
                t1 = time.perf_counter()
                await connection.copy_records_to_table(
                    "subjects", records=subject_rows, columns=["id", "tenant_id", "flags", "created_at"]
                )
                await connection.copy_records_to_table(
                    "subject_identifiers",
                    records=identifier_rows,
                    columns=["tenant_id", "id_hash", "subject_id", "type", "value_sealed", "created_at"],
                )
                await connection.copy_records_to_table(
                    "consent_events",
                    records=event_rows,
                    columns=["seq", "event_id", "tenant_id", "subject_id", "purpose", "purpose_version", "channel",
                             "status", "captured_at", "recorded_at", "source", "method", "policy_version",
                             "collection_point", "actor", "evidence"],
                )
                await connection.copy_records_to_table(
                    "consent_state",
                    records=state_rows,
                    columns=["tenant_id", "subject_id", "purpose", "channel", "status", "captured_at", "recorded_at",
                             "event_seq", "event_id", "purpose_version", "policy_version", "feed_position"],
                )
                t2 = time.perf_counter()
                timings["generate"] += t1 - t0
                timings["copy"] += t2 - t1
                done = min(start + CHUNK, subjects)
                if done == subjects or done % 250_000 == 0:
                    print(f"  loaded {done:>9,} / {subjects:,} subjects ({time.perf_counter() - began:.0f} s)", flush=True)
            # The ledger's sequence continues after the explicit seqs.
            await connection.execute(
                "SELECT setval(pg_get_serial_sequence('consent_events', 'seq'), $1)", max(subjects, 1)
            )
        t3 = time.perf_counter()
        await connection.execute("VACUUM (ANALYZE) subjects, subject_identifiers, consent_events, consent_state, purposes")
        print(
            f"  generating rows (blind index + seal) {timings['generate']:.1f} s, COPY {timings['copy']:.1f} s,"
            f" VACUUM ANALYZE {time.perf_counter() - t3:.1f} s"
        )
    finally:
        await connection.close()


# ----------------------------------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    name: str
    label: str
    command: list[str]
    path: str
    env: dict[str, str]
    port: int
    cwd: Path = ROOT
    process: subprocess.Popen | None = None
    log: Path | None = None

    def start(self, timeout: float = 60) -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.log = RESULTS / f"{self.name}.log"
        with self.log.open("ab") as log:
            log.write(f"\n--- {datetime.now().isoformat()} {' '.join(self.command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.process.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.port}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.label} did not answer /healthz within {timeout:.0f} s; see {self.log}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return
        try:
            os.killpg(self.process.pid, signal.SIGINT)
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass
        self.process = None

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def post(self, body: dict, token: str) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"http://{HOST}:{self.port}{self.path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


# --------------------------------------------------------------------------------------------------------- wrk

LUA = r"""
-- Generated by bench/check_throughput.py: POST a check for a random seeded subject.
local subjects = __SUBJECTS__
local path = "__PATH__"
local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer __TOKEN__",
}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("thread_id", counter)
end

function init(args)
  math.randomseed(os.time() * 1000 + (thread_id or 0) * 7919)
  for _ = 1, 10 do math.random() end
end

function request()
  local n = math.random(0, subjects - 1)
  local body = '{"subject":{"email":"subject' .. n .. '@bench.example"},"purpose":"marketing","channel":"email"}'
  return wrk.format("POST", path, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
"""


@dataclass
class Run:
    round: int
    target: str
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    requests: int
    errors: int
    server_cpu_us: float  # CPU of the server process per request
    postgres_cpu_us: float  # CPU of the PostgreSQL backends serving the bench database, per request
    busy_other: float  # cores busy with processes other than the server, its postgres backends and wrk
    steal: float  # cores' worth of time the hypervisor gave to other guests (a shared host)
    raw: dict = field(repr=False, default_factory=dict)


def write_lua(directory: Path, server: Server, subjects: int, token: str) -> Path:
    script = directory / f"{server.name}.lua"
    text = LUA.replace("__SUBJECTS__", str(subjects)).replace("__PATH__", server.path).replace("__TOKEN__", token)
    script.write_text(text)
    return script


def wrk(script: Path, port: int, path: str, *, seconds: int, connections: int, threads: int) -> dict:
    command = [
        "wrk", f"--threads={threads}", f"--connections={connections}", f"--duration={seconds}s", "--timeout=5s",
        "--latency", f"--script={script}", f"http://{HOST}:{port}{path}",
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    for line in finished.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line.removeprefix("BENCH_RESULT "))
    raise RuntimeError(f"wrk gave no result (exit {finished.returncode}):\n{finished.stdout}\n{finished.stderr}")


def postgres_backend_cpu(db_name: str = DB_NAME) -> dict[str, float]:
    """User + system CPU seconds so far of each local PostgreSQL backend serving a bench database, by pid (Linux
    /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for process in Path("/proc").glob("[0-9]*"):
        try:
            # A backend's title: "postgres: 15/main: root consentd_bench 127.0.0.1(54321) idle"
            if f" {db_name} ".encode() not in (process / "cmdline").read_bytes():
                continue
            text = (process / "stat").read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        seconds[process.name] = (int(fields[11]) + int(fields[12])) / tick
    return seconds


def postgres_cpu_seconds(db_name: str = DB_NAME) -> float:
    """User + system CPU so far of the local PostgreSQL backends serving a bench database."""
    return sum(postgres_backend_cpu(db_name).values())


def _machine_seconds() -> tuple[float, float]:
    """CPU-seconds the whole machine spent busy (user, nice, system, irq, softirq) and stolen, so far."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def measure(server: Server, script: Path, round_: int, args: argparse.Namespace) -> Run:
    options = {"connections": args.connections, "threads": args.threads}
    server.start()
    try:
        if args.warmup > 0:
            wrk(script, server.port, server.path, seconds=args.warmup, **options)
        before = (server.cpu_seconds(), postgres_cpu_seconds(), *_machine_seconds(), _children_cpu_seconds())
        result = wrk(script, server.port, server.path, seconds=args.duration, **options)
        after = (server.cpu_seconds(), postgres_cpu_seconds(), *_machine_seconds(), _children_cpu_seconds())
    finally:
        server.stop()
    server_cpu, postgres_cpu, busy, steal, wrk_cpu = (b - a for a, b in zip(before, after, strict=True))
    seconds = result["duration_us"] / 1e6
    requests = max(result["requests"], 1)
    errors = sum(result[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return Run(
        round=round_,
        target=server.name,
        rps=result["requests"] / seconds,
        p50_ms=result["p50_us"] / 1000,
        p90_ms=result["p90_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        p999_ms=result["p999_us"] / 1000,
        max_ms=result["max_us"] / 1000,
        requests=result["requests"],
        errors=errors,
        server_cpu_us=server_cpu / requests * 1e6,
        postgres_cpu_us=postgres_cpu / requests * 1e6,
        busy_other=max(busy - server_cpu - postgres_cpu - wrk_cpu, 0.0) / seconds,
        steal=steal / seconds,
        raw=result,
    )


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it has been waited for
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------------------------------ report


def print_table(runs: list[Run], labels: dict[str, str]) -> None:
    print()
    print(
        f"{'round':>5}  {'target':<34} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7}"
        f" {'errors':>6} {'app CPU':>8} {'PG CPU':>7} {'other':>6} {'steal':>6}"
    )
    for run in runs:
        print(
            f"{run.round:>5}  {labels[run.target]:<34} {run.rps:>7,.0f} {run.p50_ms:>7.2f} {run.p90_ms:>7.2f}"
            f" {run.p99_ms:>7.2f} {run.max_ms:>7.1f} {run.errors:>6} {run.server_cpu_us:>6.0f}us"
            f" {run.postgres_cpu_us:>5.0f}us {run.busy_other:>5.2f}c {run.steal:>5.2f}c"
        )
    print(
        "  app/PG CPU: CPU time per request of the server process / of the PostgreSQL backends it uses;"
        "\n  other: cores kept busy meanwhile by anything but those and wrk; steal: cores' worth taken by the hypervisor"
    )


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def summarise(runs: list[Run], labels: dict[str, str], args: argparse.Namespace) -> dict:
    summary = {}
    for name in ("bare", "check"):
        mine = [r for r in runs if r.target == name]
        summary[name] = {
            "rps": sum(r.rps for r in mine) / len(mine),
            "p50_ms": _median([r.p50_ms for r in mine]),
            "p99_ms": _median([r.p99_ms for r in mine]),
            "worst_p99_ms": max(r.p99_ms for r in mine),
            "server_cpu_us": _median([r.server_cpu_us for r in mine]),
            "errors": sum(r.errors for r in mine),
        }
    per_round = [
        check.rps / bare.rps
        for bare, check in zip(
            [r for r in runs if r.target == "bare"], [r for r in runs if r.target == "check"], strict=True
        )
    ]
    ratio = summary["check"]["rps"] / summary["bare"]["rps"]
    p99 = summary["check"]["p99_ms"]
    print()
    print(f"over {args.rounds} round(s): mean req/s; median p50, p99 and CPU per request")
    for name in ("bare", "check"):
        s = summary[name]
        print(
            f"  {labels[name]:<34} {s['rps']:>7,.0f} req/s   p50 {s['p50_ms']:6.2f} ms   p99 {s['p99_ms']:6.2f} ms"
            f" (worst {s['worst_p99_ms']:.2f})   app CPU {s['server_cpu_us']:.0f} us/req   errors {s['errors']}"
        )
    ratio_ok, p99_ok = ratio >= TARGET_RATIO, p99 < TARGET_P99_MS
    rounds = ", ".join(f"{r:.2f}" for r in per_round)
    print(f"  throughput ratio check/bare         {ratio:5.2f}   (per round: {rounds})   target >= {TARGET_RATIO}:"
          f" {'MET' if ratio_ok else 'NOT MET'}")
    print(f"  check p99 at {args.connections} connections         {p99:5.2f} ms"
          f"                       target < {TARGET_P99_MS:g} ms: {'MET' if p99_ok else 'NOT MET'}")
    if summary["check"]["errors"] or summary["bare"]["errors"]:
        print("  WARNING: some requests failed (non-2xx, timeouts or socket errors): the figures are suspect")
    noisy = max(r.busy_other + r.steal for r in runs)
    if noisy > 0.25:
        print(
            f"  WARNING: other processes or guests took up to {noisy:.2f} cores during the runs; on a shared machine"
            " the figures vary from run to run (compare the per-round ratios)"
        )
    return {
        "summary": summary, "ratio": ratio, "ratio_per_round": per_round, "ratio_met": ratio_ok, "p99_met": p99_ok,
    }


# -------------------------------------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=1_000_000, help="subjects to seed (default 1,000,000)")
    parser.add_argument("--duration", type=int, default=15, help="seconds of each measured run (default 15)")
    parser.add_argument("--warmup", type=int, default=5, help="seconds of the warm-up before each run (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="bare/check pairs, interleaved (default 3)")
    parser.add_argument("--reseed", action="store_true", help="drop and rebuild the bench database")
    parser.add_argument(
        "--keep", action="store_true",
        help="after measuring, leave both servers running (until Ctrl-C) for profiling or manual requests",
    )
    args = parser.parse_args()
    if args.subjects < 1 or args.duration < 1 or args.rounds < 1 or args.connections < args.threads:
        parser.error("--subjects, --duration and --rounds must be positive, --connections >= --threads")
    return args


def main() -> int:
    args = parse_args()
    if shutil.which("wrk") is None:
        print("error: wrk is not installed. Install it with:\n    apt-get install -y wrk", file=sys.stderr)
        return 2

    admin_url = os.environ.get("BENCH_ADMIN_URL", f"postgresql://root@{HOST}:5432/postgres")
    admin = make_url(admin_url)
    app_url = admin.set(drivername="postgresql+asyncpg", database=DB_NAME).render_as_string(hide_password=False)
    # PYTHONPATH: the servers import `app` (and `bench`) from this checkout, whatever the venv's install points at.
    python_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "CONSENTD_DATABASE_URL": app_url, "CONSENTD_ENV": "development", "PYTHONPATH": python_path}
    settings = Settings(database_url=app_url, env="development")

    def interrupted(_signum, _frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)  # even when started with SIGINT ignored (e.g. in the background)
    servers: list[Server] = []
    started = time.perf_counter()
    try:
        seed_seconds = asyncio.run(
            prepare_database(admin_url, app_url, settings, args.subjects, args.reseed)
        )

        bin_dir = Path(sys.executable).parent
        consentd = [str(bin_dir / "consentd")] if (bin_dir / "consentd").exists() else [
            sys.executable, "-c", "from app.cli import main; main()"
        ]
        token = subprocess.run(
            [*consentd, "token", "--tenant", TENANT, "--scopes", "checks:read", "--ttl", "86400"],
            env=env, capture_output=True, text=True, check=True, timeout=60,
        ).stdout.strip()

        check_port, bare_port = free_port(), free_port()
        check = Server(
            "check", "consentd POST /v1/checks",
            [*consentd, "serve", "--host", HOST, "--port", str(check_port), "--no-access-log"],
            CHECK_PATH, env, check_port,
        )
        # Exactly what `consentd serve` passes to uvicorn (app/cli.py), with the bare app instead.
        bare = Server(
            "bare", "bare FastAPI + 1 asyncpg PK lookup",
            [sys.executable, "-c",
             "import uvicorn; uvicorn.run('bench.bare_app:create_app', factory=True, host='127.0.0.1',"
             f" port={bare_port}, workers=1, access_log=False, proxy_headers=True, server_header=False)"],
            BARE_PATH, env, bare_port,
        )
        servers = [bare, check]
        labels = {s.name: s.label for s in servers}

        # Sanity: one request each, for a subject in the middle of the seed.
        body = {"subject": {"email": email_of(args.subjects // 2)}, "purpose": "marketing", "channel": "email"}
        for server in servers:
            server.start()
            try:
                status, answer = server.post(body, token)
            finally:
                server.stop()
            print(f"sample answer of {server.label}: {status} {json.dumps(answer, default=str)}")
            if status != 200 or answer.get("subject_id") is None:
                print(f"  WARNING: {server.label} did not find the seeded subject; the figures would be meaningless")

        print(
            f"\nbenchmark: {args.subjects:,} subjects, {args.connections} connections, {args.threads} wrk threads,"
            f" {args.duration} s measured after {args.warmup} s warm-up, {args.rounds} round(s), bare and check"
            " alternating, one server at a time"
        )
        runs: list[Run] = []
        with tempfile.TemporaryDirectory(prefix="consentd-bench-") as scratch:
            scripts = {s.name: write_lua(Path(scratch), s, args.subjects, token) for s in servers}
            for round_ in range(1, args.rounds + 1):
                for server in servers:
                    run = measure(server, scripts[server.name], round_, args)
                    runs.append(run)
                    print(f"  round {round_} {server.label}: {run.rps:,.0f} req/s, p99 {run.p99_ms:.2f} ms", flush=True)
        print_table(runs, labels)
        verdict = summarise(runs, labels, args)
        if seed_seconds:
            print(f"\nseeding took {seed_seconds:.1f} s")
        print(f"total time {time.perf_counter() - started:.0f} s")

        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        (RESULTS / f"check_throughput-{stamp}.json").write_text(
            json.dumps(
                {"args": vars(args), "seed_seconds": seed_seconds, "runs": [asdict(r) for r in runs], **verdict},
                indent=2,
            )
        )
        if args.keep:
            for server in servers:
                server.start()
                print(f"{server.label}: http://{HOST}:{server.port}{server.path} (pid {server.process.pid})")
            print(f"token: {token}\nservers kept running; Ctrl-C to stop them")
            while all(s.process and s.process.poll() is None for s in servers):
                time.sleep(1)
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
