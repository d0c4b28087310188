"""Throughput of the cookie banner's public endpoints against `consentd serve`, side by side with GET /healthz.

    .venv/bin/python bench/banner_endpoints.py            # or: make bench BENCHES=banner_endpoints
    .venv/bin/python bench/banner_endpoints.py --duration 5 --devices 2000

1. Creates (or reuses) the database `consentd_bench_banner`: tenant `bench` with the default catalogue and a
   publishable key for the origin https://shop.example (app.services.banner.banners.create_key). The database carries a
   comment naming the seed; later runs reuse it and its key (--reseed rebuilds it, a different --devices too).
2. Starts `consentd serve --no-access-log` with CONSENTD_PUBLIC_RATE_PER_IP / _PER_KEY set far above what the
   load reaches (the default limits would answer 429 after a few hundred requests). On a fresh database it seeds
   --devices devices (ids as consentd issues them, their random parts drawn from a fixed seed and signed here with
   the key the server derives from the same CONSENTD_IDENTIFIER_KEY), each with a choice of the three cookie categories,
   by POST /v1/public/cookie-consents from --seed-tasks concurrent httpx requests. That runs at the POST's own
   rate (under 100 a second on a busy 2-core machine: about a minute for the default 5,000), once: a reused
   database keeps its devices. --devices 20000 takes about four minutes the first time.
3. Drives each endpoint with wrk (--connections, --threads, a --warmup run discarded, then --duration seconds),
   every request with `Origin: https://shop.example` and `?key=pk_...`, one after the other on the same server:
   GET /healthz (no database: the baseline), GET /v1/public/banner, GET /v1/public/cookie-consents/{device_id}
   for a random seeded device, and POST /v1/public/cookie-consents without a device id (a first visit: consentd
   issues a new device each request).
4. Prints req/s, p50/p99 (wrk's histogram), the answers that were not 2xx (429 counted apart), socket errors,
   CPU per request of the server and of its PostgreSQL backends, each endpoint's throughput as a ratio to
   /healthz, and GET cookie-consents against POST. It only reports: there is no target.

Each POST run adds the devices it posts (about 1,500 at 100 a second) to the database; later runs do not read them.
Everything listens on and talks to 127.0.0.1. The server's log and a JSON summary go to bench/results/.
"""

import argparse
import asyncio
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from harness import (
    HOST,
    RESULTS,
    BenchDatabase,
    Server,
    add_wrk_arguments,
    check_wrk_arguments,
    run_main,
    start_consentd,
    unlimited_public_rates,
    write_results,
    wrk_missing,
)

from app.db import Database
from app.migrations import upgrade
from app.services.banner import banners
from app.services.subjects.identifiers import IdentifierKeys
from bench.check_throughput import postgres_cpu_seconds, wrk

DB_NAME = "consentd_bench_banner"
SEED_VERSION = 2  # 2: device ids issued by consentd (v1's uuid4 hex ids are refused now)
TENANT = "bench"
ORIGIN = "https://shop.example"
POLICY_VERSION = "1"
CATEGORIES = ("cookies_analytics", "cookies_advertising", "cookies_functional")


# ----------------------------------------------------------------------------------------------------- seeding


def seed_marker(devices: int) -> str:
    return f"consentd-bench banner seed v{SEED_VERSION}: devices={devices} tenant={TENANT} origin={ORIGIN}"


def device_ids(keys: IdentifierKeys, devices: int) -> list[str]:
    """The seeded devices' ids, as consentd would issue them, the same on every run (a reused database holds them)."""
    rng = random.Random(20261122)
    return [keys.device_id(TENANT, rng.getrandbits(128).to_bytes(16, "big")) for _ in range(devices)]


def choices_of(n: int) -> dict[str, bool]:
    """A mix of choices, the same on every run: analytics on for 2 in 3, advertising for 1 in 4, functional always."""
    return {"cookies_analytics": n % 3 != 0, "cookies_advertising": n % 4 == 0, "cookies_functional": True}


async def prepare(database: BenchDatabase, devices: int, reseed: bool) -> tuple[str, bool]:
    """The publishable key, and whether the devices are still to be seeded (a fresh database)."""
    marker = seed_marker(devices)
    if not reseed and await database.marker() == marker:
        await upgrade(database.app_url)  # no-op at head; a newer migration is applied to the seeded data
        app_database = await Database.open(database.settings)
        try:
            async with app_database.transaction() as session:
                key = await banners.demo_key(session, tenant=TENANT, origin=ORIGIN)
        finally:
            await app_database.close()
        if key is not None:
            print(f"database {DB_NAME} already holds the seed ({devices:,} devices); --reseed to rebuild it")
            return key, False
    print(f"creating {DB_NAME}")
    await database.create([TENANT])
    app_database = await Database.open(database.settings)
    try:
        async with app_database.transaction() as session:
            key = await banners.create_key(session, tenant=TENANT, origins=[ORIGIN])
    finally:
        await app_database.close()
    return key, True


async def seed_devices(port: int, key: str, ids: list[str], tasks: int) -> tuple[float, dict[int, int]]:
    """POST each device's choices, `tasks` at a time; the seconds it took and the answers' statuses."""
    statuses: dict[int, int] = {}
    pending = iter(enumerate(ids))
    began = time.perf_counter()
    done = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal done
        for n, device_id in pending:
            body = {"device_id": device_id, "choices": choices_of(n), "policy_version": POLICY_VERSION}
            response = await client.post(f"/v1/public/cookie-consents?key={key}", json=body)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            done += 1
            if done % 5_000 == 0 or done == len(ids):
                print(f"  seeded {done:>7,} / {len(ids):,} devices ({time.perf_counter() - began:.0f} s)", flush=True)

    limits = httpx.Limits(max_connections=tasks, max_keepalive_connections=tasks)
    async with httpx.AsyncClient(
        base_url=f"http://{HOST}:{port}", headers={"Origin": ORIGIN}, limits=limits, timeout=10
    ) as client:
        await asyncio.gather(*(worker(client) for _ in range(tasks)))
    return time.perf_counter() - began, statuses


# --------------------------------------------------------------------------------------------------------- wrk

LUA = r"""
-- Generated by bench/banner_endpoints.py: __LABEL__
local kind = "__KIND__"
local path = "__PATH__"
local devices = {__DEVICES__}
local headers = { ["Origin"] = "__ORIGIN__" }

local fixed = nil

function init(args)
  math.randomseed(os.time() * 1000 + (thread_id or 0) * 7919)
  for _ = 1, 10 do math.random() end
  if kind == "post" then
    headers["Content-Type"] = "application/json"
  end
  if kind == "get" then
    fixed = wrk.format("GET", path, headers)
  end
end

function request()
  if kind == "get" then
    return fixed
  elseif kind == "device" then
    local id = devices[math.random(1, #devices)]
    return wrk.format("GET", path:gsub("{device_id}", id, 1), headers)
  else
    -- No device_id: a first visit, consentd issues the id (a made-up one would be refused).
    local body = '{"choices":{"cookies_analytics":true,' ..
      '"cookies_advertising":false,"cookies_functional":true},"policy_version":"__POLICY__"}'
    return wrk.format("POST", path, headers, body)
  end
end
"""


@dataclass
class Endpoint:
    name: str
    label: str
    kind: str  # "get": one fixed request; "device": a random seeded device; "post": a new (issued) device each request
    path: str


@dataclass
class Run:
    name: str
    label: str
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    statuses: dict[str, int]
    non_2xx: int
    too_many: int  # 429
    socket_errors: int  # connect/read/write errors and timeouts
    server_cpu_us: float
    postgres_cpu_us: float
    raw: dict = field(repr=False, default_factory=dict)


def endpoints(key: str) -> list[Endpoint]:
    query = f"?key={key}"
    return [
        Endpoint("healthz", "GET /healthz (baseline)", "get", "/healthz"),
        Endpoint("banner", "GET /v1/public/banner", "get", f"/v1/public/banner{query}"),
        Endpoint("status", "GET /v1/public/cookie-consents/{id}", "device",
                 f"/v1/public/cookie-consents/{{device_id}}{query}"),
        Endpoint("record", "POST /v1/public/cookie-consents", "post", f"/v1/public/cookie-consents{query}"),
    ]


def write_lua(directory: Path, endpoint: Endpoint, ids: list[str]) -> Path:
    script = directory / f"{endpoint.name}.lua"
    devices = ",".join(f'"{i}"' for i in ids) if endpoint.kind == "device" else ""
    text = (
        LUA.replace("__LABEL__", endpoint.label).replace("__KIND__", endpoint.kind).replace("__PATH__", endpoint.path)
        .replace("__ORIGIN__", ORIGIN).replace("__POLICY__", POLICY_VERSION).replace("__DEVICES__", devices)
    )
    # The status counts and the BENCH_RESULT line that check_throughput.wrk reads.
    script.write_text(text + "\n" + (Path(__file__).with_name("wrk_report.lua")).read_text())
    return script


def measure(server: Server, endpoint: Endpoint, script: Path, args: argparse.Namespace) -> Run:
    options = {"connections": args.connections, "threads": args.threads}
    if args.warmup > 0:
        wrk(script, server.port, "/", seconds=args.warmup, **options)
    before = (server.cpu_seconds(), postgres_cpu_seconds(DB_NAME))
    result = wrk(script, server.port, "/", seconds=args.duration, **options)
    after = (server.cpu_seconds(), postgres_cpu_seconds(DB_NAME))
    server_cpu, postgres_cpu = (b - a for a, b in zip(before, after, strict=True))
    requests = max(result["requests"], 1)
    statuses = {str(k): v for k, v in sorted(result["statuses"].items())}
    return Run(
        name=endpoint.name,
        label=endpoint.label,
        rps=result["requests"] / (result["duration_us"] / 1e6),
        p50_ms=result["p50_us"] / 1000,
        p90_ms=result["p90_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        max_ms=result["max_us"] / 1000,
        requests=result["requests"],
        statuses=statuses,
        non_2xx=sum(n for status, n in statuses.items() if not 200 <= int(status) < 300),
        too_many=statuses.get("429", 0),
        socket_errors=sum(result[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")),
        server_cpu_us=server_cpu / requests * 1e6,
        postgres_cpu_us=postgres_cpu / requests * 1e6,
        raw=result,
    )


# ------------------------------------------------------------------------------------------------------ checks


def sample(port: int, key: str, device_id: str) -> list[tuple[str, int, str]]:
    """One request to each endpoint before the load: (what, status, the answer's start)."""
    answers = []
    with httpx.Client(base_url=f"http://{HOST}:{port}", headers={"Origin": ORIGIN}, timeout=10) as client:
        for what, response in (
            ("GET /healthz", lambda: client.get("/healthz")),
            ("GET /v1/public/banner", lambda: client.get(f"/v1/public/banner?key={key}")),
            ("GET /v1/public/cookie-consents/{seeded}",
             lambda: client.get(f"/v1/public/cookie-consents/{device_id}?key={key}")),
            ("POST /v1/public/cookie-consents", lambda: client.post(
                f"/v1/public/cookie-consents?key={key}",
                json={"choices": choices_of(0), "policy_version": POLICY_VERSION},
            )),
        ):
            answer = response()
            answers.append((what, answer.status_code, answer.text[:160]))
    return answers


def log_problems(log: Path | None, offset: int) -> list[str]:
    """Lines of the server's log written since `offset` that tell of an error."""
    if log is None or not log.exists():
        return []
    with log.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    markers = ("Traceback", "ERROR", "Error", "Exception", "CRITICAL", " 500 ", " 503 ")
    return [line for line in text.splitlines() if any(m in line for m in markers)]


# ------------------------------------------------------------------------------------------------------ report


def print_table(runs: list[Run]) -> dict:
    base = next(r for r in runs if r.name == "healthz").rps
    print(
        f"\n{'endpoint':<38} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'non-2xx':>7} {'429':>5}"
        f" {'sock':>5} {'x healthz':>9} {'app CPU':>8} {'PG CPU':>7}"
    )
    ratios = {}
    for run in runs:
        ratios[run.name] = run.rps / base if base else float("nan")
        print(
            f"{run.label:<38} {run.rps:>7,.0f} {run.p50_ms:>7.2f} {run.p99_ms:>7.2f} {run.max_ms:>7.1f}"
            f" {run.non_2xx:>7,} {run.too_many:>5,} {run.socket_errors:>5,} {ratios[run.name]:>9.3f}"
            f" {run.server_cpu_us:>6.0f}us {run.postgres_cpu_us:>5.0f}us"
        )
    print(
        "  non-2xx: answers outside 200-299 (429 among them); sock: connect/read/write errors and timeouts;"
        "\n  x healthz: req/s as a share of GET /healthz's; app/PG CPU: CPU time per request of the server process /"
        " of its PostgreSQL backends"
    )
    for run in runs:
        if run.non_2xx:
            print(f"  {run.label}: statuses {run.statuses}")
    return ratios


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=5_000, help="devices seeded with choices (default 5,000)")
    add_wrk_arguments(parser, warmup=2)
    parser.add_argument("--seed-tasks", type=int, default=16, help="concurrent POSTs while seeding (default 16)")
    parser.add_argument("--reseed", action="store_true", help="drop and rebuild the bench database")
    args = parser.parse_args()
    check_wrk_arguments(parser, args)
    if min(args.devices, args.seed_tasks) < 1:
        parser.error("--devices and --seed-tasks must be positive")
    return args


def main() -> int:
    args = parse_args()
    if wrk_missing():
        return 2
    database = BenchDatabase(DB_NAME)
    unlimited_public_rates(database)
    started = time.perf_counter()
    server = None
    try:
        key, fresh = asyncio.run(prepare(database, args.devices, args.reseed))
        ids = device_ids(IdentifierKeys(database.settings.identifier_key, database.settings.default_region), args.devices)
        # Where Server writes the server's output: only what this run adds is searched for errors.
        log = RESULTS / "banner_endpoints.log"
        log_offset = log.stat().st_size if log.exists() else 0
        server = start_consentd(database, "banner_endpoints", "consentd public banner endpoints", "/v1/public/banner")
        seed_seconds, seed_statuses = 0.0, {}
        if fresh:
            print(f"seeding {args.devices:,} devices by POST /v1/public/cookie-consents ({args.seed_tasks} at a time)")
            seed_seconds, seed_statuses = asyncio.run(seed_devices(server.port, key, ids, args.seed_tasks))
            print(f"  {args.devices / seed_seconds:,.0f} devices/s; answers {dict(sorted(seed_statuses.items()))}")
            if set(seed_statuses) == {201}:
                asyncio.run(database.set_marker(seed_marker(args.devices)))
            else:
                print("  WARNING: some seeding POSTs were not 201; the database is not marked as seeded")

        print("\nsample answers:")
        samples = sample(server.port, key, ids[len(ids) // 2])
        for what, status, text in samples:
            print(f"  {what:<42} {status} {text}")

        print(
            f"\nbenchmark: {args.connections} connections, {args.threads} wrk threads, {args.duration} s measured after"
            f" {args.warmup} s warm-up, each endpoint in turn on one server; {args.devices:,} seeded devices"
        )
        runs: list[Run] = []
        with tempfile.TemporaryDirectory(prefix="consentd-bench-banner-") as scratch:
            for endpoint in endpoints(key):
                script = write_lua(Path(scratch), endpoint, ids)
                run = measure(server, endpoint, script, args)
                runs.append(run)
                print(
                    f"  {endpoint.label}: {run.rps:,.0f} req/s, p99 {run.p99_ms:.2f} ms, non-2xx {run.non_2xx}",
                    flush=True,
                )
        server.stop()
        ratios = print_table(runs)
        by_name = {r.name: r for r in runs}
        read, write = by_name["status"], by_name["record"]
        read_vs_write = read.rps / write.rps if write.rps else float("nan")
        print(
            f"\nGET cookie-consents / POST cookie-consents: {read_vs_write:.2f}x the throughput"
            f" (p99 {read.p99_ms:.2f} ms vs {write.p99_ms:.2f} ms; app CPU {read.server_cpu_us:.0f} vs"
            f" {write.server_cpu_us:.0f} us/req, PG CPU {read.postgres_cpu_us:.0f} vs"
            f" {write.postgres_cpu_us:.0f} us/req)"
        )
        non_2xx = sum(r.non_2xx for r in runs)
        too_many = sum(r.too_many for r in runs)
        socket_errors = sum(r.socket_errors for r in runs)
        print(f"non-2xx answers in all: {non_2xx:,} (429: {too_many:,}); socket errors and timeouts: {socket_errors:,}")
        if non_2xx or socket_errors:
            print("  WARNING: some requests failed: the figures are suspect")
        problems = log_problems(server.log, log_offset)
        print(f"server log {server.log}: {len(problems)} line(s) telling of errors")
        for line in problems[:10]:
            print(f"  {line[:200]}")
        if seed_seconds:
            print(f"\nseeding took {seed_seconds:.1f} s")
        print(f"total time {time.perf_counter() - started:.0f} s")
        write_results("banner_endpoints", {
            "args": vars(args), "devices": args.devices, "seed_seconds": seed_seconds, "seed_statuses": seed_statuses,
            "samples": samples, "runs": [asdict(r) for r in runs], "ratio_to_healthz": ratios,
            "status_over_record": read_vs_write, "non_2xx": non_2xx, "too_many": too_many,
            "socket_errors": socket_errors, "log_problems": problems[:50],
        })
        return 0
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    run_main(main)
