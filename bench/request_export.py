"""GET /v1/requests/{id}/export of a person with 100,000 events: one streamed JSON document in constant memory.

    .venv/bin/python bench/request_export.py                   # 100,000 events
    .venv/bin/python bench/request_export.py --events 1000000

1. Creates `consentd_export_bench` afresh (migrated, tenant `bench`) and COPYs one subject with an email, --events
   consent events (each with a little evidence) and its state, and a completed access request about it.
2. Starts `consentd serve` and downloads the export over HTTP, sampling the server's RSS every 50 ms; checks the
   document parses and holds every event.
3. The reference, side by side: the same events read through an asyncpg cursor and written as JSON, nothing else.
4. Prints both times, the server's RSS before and at its peak (the target: it grows by far less than the document's
   size), and the document's size. It only reports.
"""

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import orjson
from harness import BenchDatabase, RssSampler, mib, mint_token, run_main, start_consentd, write_results

from app.models.base import new_id
from app.services.subjects import IdentifierKeys

DB_NAME = "consentd_export_bench"
TENANT = "bench"
EMAIL = "exported@bench.example"


async def seed(database: BenchDatabase, events: int) -> str:
    """The subject, its events and state, and the completed access request; the request's id."""
    keys = IdentifierKeys(database.settings.identifier_key, database.settings.default_region)
    subject_id, request_id = new_id(), new_id()
    start = datetime(2020, 1, 1, tzinfo=UTC)
    connection = await asyncpg.connect(database.dsn)
    try:
        await connection.execute("INSERT INTO subjects (id, tenant_id, flags, feed_position, created_at) VALUES ($1, $2, '[]', 0, $3)",
                                 subject_id, TENANT, start)
        await connection.execute(
            "INSERT INTO subject_identifiers (tenant_id, id_hash, subject_id, type, value_sealed, created_at)"
            " VALUES ($1, $2, $3, 'email', $4, $5)",
            TENANT, keys.blind_index(TENANT, "email", EMAIL), subject_id, keys.seal(EMAIL), start,
        )
        rows = []
        for n in range(events):
            at = start + timedelta(minutes=n)
            rows.append((
                new_id(), TENANT, subject_id, "marketing", 1, "email", "granted" if n % 2 else "withdrawn", at, at,
                "bench", "api", None, None, "bench", n + 1, None, "0" * 64, f"{n:064x}",
                orjson.dumps({"form": "signup", "n": n}).decode(),
            ))
        await connection.copy_records_to_table(
            "consent_events", records=rows,
            columns=("event_id", "tenant_id", "subject_id", "purpose", "purpose_version", "channel", "status",
                     "captured_at", "recorded_at", "source", "method", "policy_version", "collection_point", "actor",
                     "chain_index", "prev_event_id", "prev_hash", "hash", "evidence"),
        )
        now = datetime.now(UTC)
        await connection.execute(
            "INSERT INTO data_requests (id, tenant_id, type, status, subject_id, received_at, verified_method, verified_at,"
            " clock_started_at, due_at, due_sort, paused_days, outcome, log_length, created_at)"
            " VALUES ($1, $2, 'access', 'completed', $3, $4, 'account', $4, $4, $5, $5, 0, '{}', 0, $4)",
            request_id, TENANT, subject_id, now, now.date() + timedelta(days=30),
        )
    finally:
        await connection.close()
    return str(request_id)


async def reference(database: BenchDatabase) -> tuple[float, int]:
    """The events through a cursor, written as JSON: the floor of the export's history."""
    connection = await asyncpg.connect(database.dsn)
    size = 0
    try:
        started = time.perf_counter()
        async with connection.transaction():
            batch = []
            async for row in connection.cursor(
                "SELECT event_id, purpose, purpose_version, channel, status, captured_at, recorded_at, source, method,"
                " policy_version, collection_point, actor, evidence FROM consent_events WHERE tenant_id = $1"
                " ORDER BY captured_at, seq", TENANT, prefetch=1000,
            ):
                batch.append(orjson.dumps(dict(row), default=str))
                if len(batch) == 1000:
                    size += sum(map(len, batch))
                    batch = []
            size += sum(map(len, batch))
        return time.perf_counter() - started, size
    finally:
        await connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="the person's events (default 100,000)")
    args = parser.parse_args()
    if args.events < 1:
        parser.error("--events must be positive")
    database = BenchDatabase(DB_NAME)
    print(f"creating {DB_NAME}: one person with {args.events:,} events", flush=True)
    asyncio.run(database.create([TENANT]))
    request_id = asyncio.run(seed(database, args.events))
    token = mint_token(database, TENANT, "requests:write")
    server = start_consentd(database, "request-export", "consentd", f"/v1/requests/{request_id}/export")
    try:
        assert server.process is not None
        with RssSampler(server.process.pid, interval=0.05) as sampler:
            time.sleep(0.5)
            idle = sampler.rss()
            started = time.perf_counter()
            with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=300) as http:
                body = bytearray()
                with http.stream("GET", f"/v1/requests/{request_id}/export", headers={"Authorization": f"Bearer {token}"}) as response:
                    response.raise_for_status()
                    first = None
                    for piece in response.iter_bytes():
                        first = first or time.perf_counter() - started
                        body += piece
            seconds = time.perf_counter() - started
    finally:
        server.stop()
    document = orjson.loads(body)
    bare, bare_size = asyncio.run(reference(database))
    ok = len(document["history"]) == args.events and document["identifiers"][0]["value"] == EMAIL
    print(f"\nexport of a person with {args.events:,} events")
    print(f"  consentd GET /v1/requests/{{id}}/export  {seconds:6.2f} s  first bytes after {first or 0:.2f} s,"
          f" {mib(len(body)):.1f} MB, every event in it: {'yes' if ok else 'NO'}")
    print(f"  bare asyncpg cursor + orjson            {bare:6.2f} s  ({mib(bare_size):.1f} MB of events)  ratio {seconds / bare:.1f}x")
    grown = mib(sampler.peak - idle)
    print(f"  server RSS idle {mib(idle):.0f} MB, peak {mib(sampler.peak):.0f} MB: grew {grown:.0f} MB for a"
          f" {mib(len(body)):.0f} MB document")
    write_results("request-export", {
        "events": args.events, "seconds": seconds, "bare_seconds": bare, "bytes": len(body), "idle_rss": idle,
        "peak_rss": sampler.peak, "complete": ok,
    })
    return 0 if ok else 1


if __name__ == "__main__":
    run_main(main)
