"""GET /v1/changes pages of 1,000 over a feed of 10M changes: over HTTP against `consentd serve`, and the SQL alone.

    .venv/bin/python bench/changes_feed.py                              # 10M changes of tenant `bench`
    .venv/bin/python bench/changes_feed.py --changes 200000 --pages 50

1. Creates (or reuses) the database `consentd_changes_bench`: tenant `bench` with --changes rows in consent_changes
   (one subject per 10 changes) and --other-share as many again spread over two other tenants, interleaved, COPied
   straight into the table. The database carries a comment naming the seed; later runs reuse it (--reseed rebuilds).
2. Starts `consentd serve` and, with one keep-alive HTTP connection and a consents:read token, follows next_cursor
   for --pages pages of --limit from several starting points: the beginning, 25%, 50%, 75% into the feed, and the
   last --pages pages up to its end; then polls the end of the feed (empty pages) --pages times.
3. Runs the same query as services/changes.page with asyncpg (no HTTP, no SQLAlchemy, no models) over the same pages.
4. Prints p50 / p95 / max per page for each starting point and in all, and whether HTTP p95 is under 50 ms.
   It only reports: a missed target does not change the exit status.

About `position`: on PostgreSQL it is a transaction id no smaller than the writer's, and the feed shows only
positions below the oldest running transaction id (pg_snapshot_xmin). The seed therefore spreads its positions
below the cluster's transaction counter as it is when seeding, however small that is: on a young cluster many
changes share a position, as they do when one transaction (an import) writes many. About 0.1% of the changes are
"late": a position below that of changes with smaller seqs, as a slow writer's are, so feed order is not seq order.
"""

import argparse
import asyncio
import http.client
import random
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
from harness import HOST, BenchDatabase, mint_token, percentile, run_main, start_consentd, write_results

from app.services.changes.feed import encode_cursor

DB_NAME = "consentd_changes_bench"
SEED_VERSION = 1
TENANT = "bench"
OTHER_TENANTS = ("bench-other-a", "bench-other-b")
CHANGES_PER_SUBJECT = 10
COPY_ROWS = 100_000
TARGET_MS = 50.0
# (purpose, stored channel) of the changes, and how often: "" is a purpose without channels.
DECISIONS = [("marketing", "email")] * 5 + [("marketing", "sms")] * 2 + [("market_research", "email")] + [
    ("cookies_analytics", "")
] * 2
COLUMNS = ["seq", "tenant_id", "position", "subject_id", "purpose", "channel", "status", "captured_at", "event_id"]
# services/changes.page, as it reaches PostgreSQL.
PAGE_SQL = """
SELECT seq, tenant_id, position, subject_id, purpose, channel, status, captured_at, event_id
FROM consent_changes
WHERE tenant_id = $1 AND (position, seq) > ($2, $3)
  AND position < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
ORDER BY position, seq
LIMIT $4
"""


# ----------------------------------------------------------------------------------------------------- seeding


def seed_marker(changes: int, other_share: float) -> str:
    return f"consentd-bench changes seed v{SEED_VERSION}: changes={changes} tenant={TENANT} other_share={other_share}"


async def prepare(database: BenchDatabase, changes: int, other_share: float, reseed: bool) -> float:
    """Seed the feed unless the database holds this seed already; the seconds spent seeding."""
    marker = seed_marker(changes, other_share)
    if not reseed and await database.marker() == marker:
        print(f"database {DB_NAME} already holds the seed ({changes:,} changes); --reseed to rebuild it")
        return 0.0
    started = time.perf_counter()
    print(f"creating {DB_NAME}")
    await database.create([TENANT, *OTHER_TENANTS])
    connection = await asyncpg.connect(database.dsn)
    try:
        await load(connection, changes, other_share)
        t0 = time.perf_counter()
        await connection.execute("VACUUM (ANALYZE) consent_changes, subjects")
        print(f"  VACUUM ANALYZE {time.perf_counter() - t0:.1f} s")
    finally:
        await connection.close()
    await database.set_marker(marker)
    elapsed = time.perf_counter() - started
    print(f"seeded {changes:,} changes in {elapsed:.1f} s")
    return elapsed


async def load(connection: asyncpg.Connection, changes: int, other_share: float) -> None:
    """COPY subjects, then the changes in seq order (text format, generated as they are sent)."""
    rng = random.Random(20261122)
    if await connection.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
        # Consistent by construction: skip the per-row foreign-key triggers during COPY.
        await connection.execute("SET session_replication_role = replica")
    others = int(changes * other_share)
    total = changes + others
    pools = {TENANT: max(changes // CHANGES_PER_SUBJECT, 1)}
    pools.update({key: max(others // len(OTHER_TENANTS) // CHANGES_PER_SUBJECT, 1) for key in OTHER_TENANTS})
    subjects = {key: [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)] for key, n in pools.items()}
    created = datetime.now(UTC) - timedelta(days=400)
    await connection.copy_records_to_table(
        "subjects",
        records=[(uuid.UUID(s), key, "[]", created) for key, ids in subjects.items() for s in ids],
        columns=["id", "tenant_id", "flags", "created_at"],
    )
    # Positions below the transaction counter as it is now: every later snapshot's xmin is above them.
    horizon = await connection.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
    span = max(horizon - 2, 1)
    print(f"  {sum(pools.values()):,} subjects; {total:,} changes ({changes:,} of {TENANT}) over positions"
          f" 1..{span:,} (about {total / span:,.0f} a position)", flush=True)
    began = time.perf_counter()

    async def rows():
        bench_subjects, start_second = subjects[TENANT], int(created.timestamp()) + 86_400
        other_subjects = [subjects[key] for key in OTHER_TENANTS]
        stamp_second, stamp = -1, ""
        lines = []
        for seq in range(1, total + 1):
            position = 1 + (seq - 1) * span // total
            if rng.random() < 0.001:  # a late writer: started (took its xid) earlier, committed later
                position = max(1, position - rng.randrange(1, 50))
            if (seq * others) // total != ((seq - 1) * others) // total:  # exactly `others` of them, spread evenly
                index = rng.randrange(len(OTHER_TENANTS))
                tenant, subject = OTHER_TENANTS[index], rng.choice(other_subjects[index])
            else:
                tenant, subject = TENANT, rng.choice(bench_subjects)
            purpose, channel = rng.choice(DECISIONS)
            status = "granted" if rng.random() < 0.8 else "withdrawn"
            second = start_second + seq // 40  # 40 changes a second
            if second != stamp_second:
                stamp_second = second
                stamp = datetime.fromtimestamp(second, UTC).isoformat()
            lines.append(
                f"{seq}\t{tenant}\t{position}\t{subject}\t{purpose}\t{channel}\t{status}\t{stamp}\t"
                f"{rng.getrandbits(128):032x}\n"
            )
            if len(lines) == COPY_ROWS:
                yield "".join(lines).encode()
                lines = []
                if seq % 1_000_000 == 0:
                    print(f"  copied {seq:>11,} / {total:,} changes ({time.perf_counter() - began:.0f} s)", flush=True)
        if lines:
            yield "".join(lines).encode()

    await connection.copy_to_table("consent_changes", source=rows(), columns=COLUMNS, format="text")
    await connection.execute("SELECT setval(pg_get_serial_sequence('consent_changes', 'seq'), $1)", total)
    print(f"  copied {total:,} changes in {time.perf_counter() - began:.1f} s")


# ------------------------------------------------------------------------------------------------------ timing


@dataclass
class Walk:
    """Pages read one after the other from a starting point, following the cursor."""

    label: str
    via: str  # "HTTP" or "SQL"
    start_offset: int
    page_ms: list[float] = field(default_factory=list)
    rows: int = 0
    problems: list[str] = field(default_factory=list)

    def stats(self) -> dict:
        return summary(self.page_ms)


def summary(values: list[float]) -> dict:
    return {
        "pages": len(values), "p50_ms": percentile(values, 0.5), "p95_ms": percentile(values, 0.95),
        "max_ms": max(values, default=float("nan")),
    }


async def cursor_at(connection: asyncpg.Connection, offset: int) -> tuple[int, int] | None:
    """(position, seq) of the change `offset` changes into the tenant's feed (None: before the first)."""
    if offset <= 0:
        return None
    row = await connection.fetchrow(
        "SELECT position, seq FROM consent_changes WHERE tenant_id = $1 ORDER BY position, seq OFFSET $2 LIMIT 1",
        TENANT, offset - 1,
    )
    return (row["position"], row["seq"]) if row else None


def walk_http(port: int, token: str, walk: Walk, start: tuple[int, int] | None, pages: int, limit: int,
              tail: bool) -> None:
    """GET pages over one keep-alive connection; the time of each is from sending the request to the whole body."""
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"}
    after = encode_cursor(*start) if start else None
    previous = None
    try:
        for _ in range(pages):
            path = f"/v1/changes?limit={limit}" + (f"&after={after}" if after else "")
            began = time.perf_counter()
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            body = response.read()
            walk.page_ms.append((time.perf_counter() - began) * 1000)
            if response.status != 200:
                walk.problems.append(f"HTTP {response.status}: {body[:200]!r}")
                break
            page = orjson.loads(body)
            walk.rows += len(page["changes"])
            if page["changes"] and page["changes"][0]["cursor"] == previous:
                walk.problems.append("a page started with the previous page's last change")
            if not tail and len(page["changes"]) < limit:
                walk.problems.append(f"a short page ({len(page['changes'])}) before the end")
                break
            previous = page["changes"][-1]["cursor"] if page["changes"] else previous
            after = page["next_cursor"]
    finally:
        connection.close()


async def walk_sql(connection: asyncpg.Connection, walk: Walk, start: tuple[int, int] | None, pages: int,
                   limit: int) -> None:
    position, seq = start or (-1, 0)
    statement = await connection.prepare(PAGE_SQL)
    for _ in range(pages):
        began = time.perf_counter()
        rows = await statement.fetch(TENANT, position, seq, limit)
        walk.page_ms.append((time.perf_counter() - began) * 1000)
        walk.rows += len(rows)
        if rows:
            position, seq = rows[-1]["position"], rows[-1]["seq"]


async def explain(connection: asyncpg.Connection, start: tuple[int, int] | None, limit: int) -> list[str]:
    position, seq = start or (-1, 0)
    plan = await connection.fetch("EXPLAIN (ANALYZE, BUFFERS) " + PAGE_SQL, TENANT, position, seq, limit)
    return [row[0] for row in plan]


# -------------------------------------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=10_000_000, help="changes of tenant bench (10,000,000)")
    parser.add_argument("--other-share", type=float, default=0.05,
                        help="changes of two other tenants, as a share of --changes (default 0.05)")
    parser.add_argument("--pages", type=int, default=200, help="pages read from each starting point (default 200)")
    parser.add_argument("--limit", type=int, default=1_000, help="changes a page (default 1,000)")
    parser.add_argument("--reseed", action="store_true", help="drop and rebuild the bench database")
    args = parser.parse_args()
    if min(args.changes, args.pages, args.limit) < 1 or not 0 <= args.other_share < 1:
        parser.error("counts must be positive and --other-share in [0, 1)")
    if args.pages * args.limit > args.changes:
        parser.error("--pages x --limit must not exceed --changes")
    return args


def print_walks(walks: list[Walk]) -> None:
    print(f"\n{'via':<5} {'from':<28} {'pages':>5} {'changes':>9} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}")
    for walk in walks:
        s = walk.stats()
        print(f"{walk.via:<5} {walk.label:<28} {s['pages']:>5} {walk.rows:>9,} {s['p50_ms']:>7.2f} {s['p95_ms']:>7.2f}"
              f" {s['max_ms']:>7.2f}")
        for problem in walk.problems[:5]:
            print(f"      PROBLEM: {problem}")


def main() -> int:
    args = parse_args()
    database = BenchDatabase(DB_NAME)
    started = time.perf_counter()
    server = None
    try:
        seed_seconds = asyncio.run(prepare(database, args.changes, args.other_share, args.reseed))
        total = asyncio.run(database.count("consent_changes", TENANT))
        span = args.pages * args.limit
        starts = [("beginning", 0)] + [(f"{p}% in", total * p // 100) for p in (25, 50, 75)] + [
            (f"last {span:,} to the end", total - span)
        ]

        async def cursors() -> list[tuple[int, int] | None]:
            connection = await asyncpg.connect(database.dsn)
            try:
                return [await cursor_at(connection, offset) for _, offset in starts] + [
                    await cursor_at(connection, total)
                ]
            finally:
                await connection.close()

        points = asyncio.run(cursors())
        token = mint_token(database, TENANT, "consents:read")
        server = start_consentd(database, "changes", "consentd GET /v1/changes", "/v1/changes")
        print(f"\nfeed of {total:,} changes of {TENANT}; {args.pages} pages of {args.limit:,} from each starting point",
              flush=True)
        warm = Walk("warm-up", "HTTP", total)
        walk_http(server.port, token, warm, points[-1], 10, args.limit, tail=True)  # not counted
        walks: list[Walk] = []
        for (label, offset), point in zip(starts, points, strict=False):
            walk = Walk(label, "HTTP", offset)
            walk_http(server.port, token, walk, point, args.pages, args.limit, tail=False)
            walks.append(walk)
        tail = Walk("the end (empty pages)", "HTTP", total)
        walk_http(server.port, token, tail, points[-1], args.pages, args.limit, tail=True)
        walks.append(tail)
        server.stop()

        async def sql() -> tuple[list[Walk], list[str]]:
            connection = await asyncpg.connect(database.dsn)
            try:
                done = []
                for (label, offset), point in zip(starts, points, strict=False):
                    walk = Walk(label, "SQL", offset)
                    await walk_sql(connection, walk, point, args.pages, args.limit)
                    done.append(walk)
                walk = Walk("the end (empty pages)", "SQL", total)
                await walk_sql(connection, walk, points[-1], args.pages, args.limit)
                done.append(walk)
                return done, await explain(connection, points[2], args.limit)
            finally:
                await connection.close()

        sql_walks, plan = asyncio.run(sql())
        walks += sql_walks
        print_walks(walks)
        overall = {via: summary([ms for w in walks if w.via == via for ms in w.page_ms]) for via in ("HTTP", "SQL")}
        print("\nall pages")
        for via, s in overall.items():
            print(f"  {via:<5} {s['pages']:>5} pages   p50 {s['p50_ms']:6.2f} ms   p95 {s['p95_ms']:6.2f} ms"
                  f"   max {s['max_ms']:6.2f} ms")
        met = overall["HTTP"]["p95_ms"] < TARGET_MS
        print(f"  GET /v1/changes?limit={args.limit} p95 {overall['HTTP']['p95_ms']:.2f} ms   target < {TARGET_MS:g} ms:"
              f" {'MET' if met else 'NOT MET'}   (max {overall['HTTP']['max_ms']:.2f} ms)")
        problems = sum(len(w.problems) for w in walks)
        if problems:
            print(f"  WARNING: {problems} problem(s) while following the cursors, see above")
        print("\nplan of a page 50% in:")
        for line in plan:
            print(f"  {line}")
        if seed_seconds:
            print(f"\nseeding took {seed_seconds:.1f} s")
        print(f"total time {time.perf_counter() - started:.0f} s")
        write_results("changes_feed", {
            "args": vars(args), "seed_seconds": seed_seconds, "changes": total, "overall": overall, "met": met,
            "walks": [{**asdict(w), **w.stats()} for w in walks], "plan": plan,
        })
        return 0
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    run_main(main)
