"""GET /v1/requests?due_before= paging through 1M data-subject requests with keyset cursors, on PostgreSQL.

    .venv/bin/python bench/requests_page.py                    # 1M requests, 200 pages of 100
    .venv/bin/python bench/requests_page.py --requests 50000 --pages 50

1. Creates `consentd_requests_bench` afresh (migrated, tenant `bench`) and COPYs --requests requests into it, due
   over two years (a tenth still waiting for verification, no due date), each with one log entry.
2. Starts `consentd serve` and follows `next_cursor` from the first page of `GET /v1/requests?due_before=D&limit=100`
   (D: the last due date, so every dated request is in the list) for --pages pages, then as many pages again from
   cursors deep in the list (half way, nine tenths); each page is timed end to end over HTTP.
3. The reference, side by side: the same keyset statement (requests and their log entries) on bare asyncpg.
4. Prints p50, p95 and the slowest page of each, and whether every page took under 50 ms (the target). It only
   reports: a missed target does not change the exit status.
"""

import argparse
import asyncio
import random
import statistics
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg
import httpx
from harness import BenchDatabase, mint_token, run_main, start_consentd, write_results

from app.models.base import new_id
from app.services.audit.request_log import entry_hash
from app.services.requests.store import cursor_after

DB_NAME = "consentd_requests_bench"
TENANT = "bench"
TARGET_MS = 50.0
LIMIT = 100
TYPES = ("access", "portability", "erasure", "rectification", "restriction", "objection")
NOT_DUE = date(9999, 12, 31)
START = date(2026, 1, 5)


async def seed(database: BenchDatabase, count: int) -> date:
    """The requests and a log entry each, by COPY; the last due date."""
    rng = random.Random(7)
    received = datetime(2026, 1, 1, tzinfo=UTC)
    requests, log, last = [], [], START
    for n in range(count):
        request_id = new_id()
        kind = TYPES[n % len(TYPES)]
        waiting = n % 10 == 0 and kind in ("access", "erasure")
        due = None if waiting else START + timedelta(days=rng.randrange(730))
        last = max(last, due or last)
        at = received + timedelta(seconds=n)
        head = entry_hash(tenant=TENANT, request_id=request_id, chain_index=1, prev_hash="0" * 64, at=at,
                          action="received", actor="bench", note="received")
        requests.append((
            request_id, TENANT, kind, "pending_verification" if waiting else "in_progress", at, None if waiting else at,
            due, due or NOT_DUE, 0, 1, head, at,
        ))
        log.append((TENANT, request_id, 1, at, "received", "bench", "received", "0" * 64, head))
    connection = await asyncpg.connect(database.dsn)
    try:
        await connection.copy_records_to_table(
            "data_requests", records=requests,
            columns=("id", "tenant_id", "type", "status", "received_at", "clock_started_at", "due_at", "due_sort",
                     "paused_days", "log_length", "log_head_hash", "created_at"),
        )
        await connection.copy_records_to_table(
            "data_request_log", records=log,
            columns=("tenant_id", "request_id", "chain_index", "at", "action", "actor", "note", "prev_hash", "hash"),
        )
        for table in ("data_requests", "data_request_log"):
            await connection.execute(f"VACUUM ANALYZE {table}")
    finally:
        await connection.close()
    return last


# The reference: the statement the service runs, with nothing around it.
PAGE = (
    "SELECT * FROM data_requests WHERE tenant_id = $1 AND due_sort < $2 AND (due_sort, id) > ($3, $4)"
    " ORDER BY due_sort, id LIMIT $5"
)
LOG = (
    "SELECT request_id, at, action, actor, note FROM data_request_log WHERE request_id = ANY($1::uuid[])"
    " ORDER BY request_id, chain_index"
)


async def reference(database: BenchDatabase, due_before: date, starts: list[tuple[date, uuid.UUID]], pages: int) -> list[float]:
    connection = await asyncpg.connect(database.dsn)
    timings = []
    try:
        for after_due, after_id in starts:
            for _ in range(pages):
                started = time.perf_counter()
                rows = await connection.fetch(PAGE, TENANT, due_before, after_due, after_id, LIMIT + 1)
                await connection.fetch(LOG, [row["id"] for row in rows[:LIMIT]])
                timings.append((time.perf_counter() - started) * 1000)
                if len(rows) <= LIMIT:
                    break
                after_due, after_id = rows[LIMIT - 1]["due_sort"], rows[LIMIT - 1]["id"]
    finally:
        await connection.close()
    return timings


def follow(base: str, token: str, due_before: date, cursor: str | None, pages: int) -> tuple[list[float], int]:
    timings, seen = [], 0
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        for _ in range(pages):
            params = {"due_before": due_before.isoformat(), "limit": LIMIT, **({"cursor": cursor} if cursor else {})}
            started = time.perf_counter()
            response = http.get("/v1/requests", params=params)
            timings.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            body = response.json()
            seen += len(body["requests"])
            cursor = body["next_cursor"]
            if cursor is None:
                break
    return timings, seen


async def deep_starts(database: BenchDatabase, due_before: date, count: int) -> list[tuple[date, uuid.UUID]]:
    """The (due_sort, id) of the rows half way and nine tenths into the list."""
    connection = await asyncpg.connect(database.dsn)
    try:
        return [
            tuple(await connection.fetchrow(
                "SELECT due_sort, id FROM data_requests WHERE tenant_id = $1 AND due_sort < $2 ORDER BY due_sort, id"
                " OFFSET $3 LIMIT 1", TENANT, due_before, int(count * share),
            ))
            for share in (0.5, 0.9)
        ]
    finally:
        await connection.close()


def summary(label: str, timings: list[float]) -> dict:
    ordered = sorted(timings)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    figures = {"pages": len(ordered), "p50_ms": statistics.median(ordered), "p95_ms": p95, "max_ms": ordered[-1]}
    print(f"  {label:<34} {figures['pages']:4d} pages  p50 {figures['p50_ms']:6.1f} ms  p95 {p95:6.1f} ms"
          f"  slowest {figures['max_ms']:6.1f} ms")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000, help="requests seeded (default 1,000,000)")
    parser.add_argument("--pages", type=int, default=200, help="pages followed from each start (default 200)")
    args = parser.parse_args()
    if args.requests < 1 or args.pages < 1:
        parser.error("--requests and --pages must be positive")
    database = BenchDatabase(DB_NAME)
    print(f"creating {DB_NAME} and seeding {args.requests:,} requests", flush=True)
    started = time.perf_counter()
    asyncio.run(database.create([TENANT]))
    last = asyncio.run(seed(database, args.requests))
    print(f"seeded in {time.perf_counter() - started:.1f} s", flush=True)
    due_before = last + timedelta(days=1)
    starts = asyncio.run(deep_starts(database, due_before, int(args.requests * 0.9)))
    token = mint_token(database, TENANT, "consents:read")
    server = start_consentd(database, "requests-page", "consentd", "/v1/requests")
    try:
        base = f"http://127.0.0.1:{server.port}"
        follow(base, token, due_before, None, 5)  # warm-up
        first, seen = follow(base, token, due_before, None, args.pages)
        deep: list[float] = []
        for after_due, after_id in starts:
            cursor = cursor_after(after_due, after_id)
            deep += follow(base, token, due_before, cursor, args.pages)[0]
    finally:
        server.stop()
    bare = asyncio.run(reference(database, due_before, [(date(1, 1, 1), uuid.UUID(int=0)), *starts], args.pages))
    print(f"\n{args.requests:,} requests; GET /v1/requests?due_before={due_before}&limit={LIMIT}, keyset cursors")
    results = {
        "from the start": summary("consentd, from the first page", first),
        "deep": summary("consentd, from half and 9/10 in", deep),
        "reference": summary("bare asyncpg, the same statements", bare),
    }
    slowest = max(first + deep)
    print(f"  every page under {TARGET_MS:.0f} ms: {'MET' if slowest < TARGET_MS else 'NOT MET'} (slowest {slowest:.1f} ms;"
          f" {seen:,} requests seen from the start)")
    path = write_results("requests-page", {"requests": args.requests, "pages": args.pages, **results})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    run_main(main)
