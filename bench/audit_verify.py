"""Verifying a tenant's hash-chained ledger on PostgreSQL: 1M events, tampering, signed checkpoints, the audit export.

    .venv/bin/python bench/audit_verify.py                      # 1M events; or: make bench BENCHES=audit_verify
    .venv/bin/python bench/audit_verify.py --events 200000      # a quicker look
    .venv/bin/python bench/audit_verify.py --events 100000 --profile   # cProfile of the first verification

1. Creates its own database `consentd_bench_audit_<hex>` (migrated, tenant `bench` with the default catalogue) and
   COPies --events consent_events into it (asyncpg copy_records_to_table), with their subjects and ledger_chains
   heads: 1 to 7 events a subject (4 on average, so ~250k subjects for 1M), chained in Python with
   app.services.ledger.chains.event_hash (the service's canonical hashing; one subject is checked against
   chains.chain_events too), so that every event verifies. The events are written in rounds (every subject's 1st
   event, then every 2nd, ...), so a subject's events lie far apart in the table, as in a ledger written over time.
   consent_state is then filled from the events in one INSERT ... SELECT DISTINCT ON (the newest event of each
   (subject, purpose, channel) by captured_at, then seq, as the service moves it), so that verification's state
   comparison reads and compares real rows. The load is timed apart and is not part of any other figure.
2. Times verification.verify(tenant=bench, checkpoint=None) over the whole ledger in this process: events/s, wall
   seconds, this process's CPU and that of its PostgreSQL backend, and this process's RSS before, after and at its
   peak (sampled every 50 ms). Then changes three events with raw SQL, in three different subjects (as
   tests/services/test_tamper.py does): an UPDATE of the status of one, a DELETE of another (mid-chain), an INSERT
   of a copy of a third under a new event_id; and flips a withdrawn consent_state row of a fourth subject to
   granted; verifies again and says whether exactly those four were named (changed, deleted, inserted,
   state_mismatch).
3. Before the tampering: when app.security has a Signer, times checkpoints.create (in database.transaction()) and
   checkpoints.verify(database, signer, tenant=bench) (the full verification against that latest checkpoint) and
   the same with incremental=True (every chain unchanged: the heads and the state rows are compared);
   after the tampering, checkpoints.verify again. Without a Signer it prints a note and skips this.
4. Starts `consentd serve --no-access-log` on the database and streams GET /v1/audit/events over the whole period
   (format=ndjson, then format=csv) with an audit:read token, counting lines and bytes: rows/s, MB/s, time to the
   first byte, and the server's RSS before, at its peak and after (sampled every 50 ms). A 404 (no such endpoint
   yet) prints a note and skips it.
5. Drops the database at the end, failure or Ctrl-C included (bounded by --drop-timeout), unless --keep-db, and
   prints a table of the figures. A JSON summary goes to bench/results/. It only reports: there is no target
   beyond the printed "< 60 s for 1M" note on the verification.
"""

import argparse
import asyncio
import contextlib
import cProfile
import ctypes
import gc
import http.client
import io
import os
import pstats
import random
import time
import urllib.parse
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import psutil
from harness import (
    HOST,
    RESULTS,
    BenchDatabase,
    RssSampler,
    mib,
    mint_token,
    run_main,
    start_consentd,
    write_results,
)

# After harness, which puts the checkout on sys.path.
from app.db import Database
from app.services.audit import checkpoints, verification
from app.services.ledger import chains
from bench.check_throughput import postgres_cpu_seconds

TENANT = "bench"
CHUNK = 50_000
TARGET_VERIFY_SECONDS_PER_MILLION = 60.0
EXPORT_PATH = "/v1/audit/events"
EXPORT_PERIOD = {"from": "1970-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
# (purpose, channel): consent purposes of the default catalogue; "" is a purpose without channels (NO_CHANNEL).
DECISIONS = (
    ("marketing", "email"), ("marketing", "sms"), ("marketing", "phone"), ("market_research", "email"),
    ("cookies_analytics", ""), ("cookies_advertising", ""),
)
SOURCES = ("web-signup", "crm-sync", "banner", "call-centre")
METHODS = ("api", "import", "banner", "api")
# The newest event of each (subject, purpose, channel) by captured_at, then seq: the state the service moves to
# (consents.append). Computed by PostgreSQL, apart from the Python the verification compares it with.
FILL_STATES = """
INSERT INTO consent_state (tenant_id, subject_id, purpose, channel, status, captured_at, recorded_at, event_seq, event_id,
                           purpose_version, policy_version, feed_position)
SELECT DISTINCT ON (subject_id, purpose, channel) tenant_id, subject_id, purpose, channel, status, captured_at,
       recorded_at, seq, event_id, purpose_version, policy_version, 0
FROM consent_events WHERE tenant_id = $1 ORDER BY subject_id, purpose, channel, captured_at DESC, seq DESC
"""
EVENT_COLUMNS = [
    "seq", "event_id", "tenant_id", "subject_id", "purpose", "purpose_version", "channel", "status", "captured_at",
    "recorded_at", "source", "method", "policy_version", "collection_point", "actor", "evidence", "chain_index",
    "prev_event_id", "prev_hash", "hash",
]


def malloc_trim() -> None:
    """Give freed heap back to the system, so that RSS before a measurement is not the load's leftovers."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss() -> int:
    return psutil.Process().memory_info().rss


class ProcessRss(RssSampler):
    """harness.RssSampler for one process without its children: walking every process for children costs ~3 ms a
    sample, which in this process would take the GIL from the verification being measured."""

    def rss(self) -> int:
        try:
            return self.process.memory_info().rss
        except psutil.Error:
            return 0


def machine_busy_seconds() -> float:
    """CPU-seconds the whole machine spent busy so far (user, nice, system, irq, softirq; Linux /proc/stat)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:8]]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------------------------------- loading


@dataclass
class Load:
    events: int
    subjects: int
    generate_s: float = 0.0  # building rows and hashing them in Python
    copy_s: float = 0.0  # COPY into the indexed tables
    states_s: float = 0.0  # consent_state filled from the events
    states: int = 0
    vacuum_s: float = 0.0  # VACUUM ANALYZE
    total_s: float = 0.0
    chain_events_agrees: bool = False
    # Three events in three different subjects, and a withdrawn state's event in a fourth, for the tampering
    # (event ids as strings).
    targets: dict[str, str] = field(default_factory=dict)


def chain_lengths(events: int, rng: random.Random) -> list[int]:
    """Events per subject: 1 to 7 (4 on average), the last one cut so that they add up to `events`."""
    lengths, total = [], 0
    while total < events:
        n = min(rng.randint(1, 7), events - total)
        lengths.append(n)
        total += n
    return lengths


async def load_ledger(database: BenchDatabase, events: int, seed: int) -> Load:
    rng = random.Random(seed)
    lengths = chain_lengths(events, rng)
    subjects = len(lengths)
    result = Load(events=events, subjects=subjects)
    began = time.perf_counter()
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=400)
    span_us = 399 * 86_400 * 1_000_000  # the ledger's events spread over 399 days, in seq order
    subject_ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(subjects)]
    head_event: list[uuid.UUID | None] = [None] * subjects
    head_hash: list[str] = [chains.GENESIS] * subjects
    # Subject 0's events as written, to compare with chains.chain_events at the end.
    witness: list[dict] = []
    connection = await asyncpg.connect(database.dsn)
    try:
        versions = dict(await connection.fetch(
            "SELECT key, version FROM purposes WHERE tenant_id = $1", TENANT
        ))
        missing = {p for p, _ in DECISIONS} - set(versions)
        if missing:
            raise RuntimeError(f"the default catalogue lacks {sorted(missing)}")
        if await connection.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
            # The rows are consistent by construction: skip the per-row foreign-key triggers during COPY.
            await connection.execute("SET session_replication_role = replica")
        async with connection.transaction():
            t0 = time.perf_counter()
            created = start - timedelta(days=1)
            subject_rows = [(s, TENANT, "[]", created) for s in subject_ids]
            t1 = time.perf_counter()
            await connection.copy_records_to_table(
                "subjects", records=subject_rows, columns=["id", "tenant_id", "flags", "created_at"]
            )
            result.generate_s += t1 - t0
            result.copy_s += time.perf_counter() - t1
            del subject_rows

            # Rounds: round r holds the (r+1)-th event of every subject that has one, in subject order.
            seq = 0
            rows: list[tuple] = []
            t0 = time.perf_counter()
            for round_ in range(max(lengths)):
                for i in range(subjects):
                    if lengths[i] <= round_:
                        continue
                    seq += 1
                    purpose, channel = DECISIONS[(i + round_) % len(DECISIONS)]
                    captured = start + timedelta(microseconds=span_us * seq // events + rng.randrange(1_000_000))
                    recorded = captured + timedelta(microseconds=rng.randrange(5_000_000))
                    event = {
                        "tenant_id": TENANT, "subject_id": subject_ids[i], "chain_index": round_ + 1,
                        "prev_event_id": head_event[i], "prev_hash": head_hash[i],
                        "event_id": uuid.UUID(int=rng.getrandbits(128), version=4), "purpose": purpose,
                        "purpose_version": versions[purpose], "channel": channel,
                        "status": "withdrawn" if rng.random() < 0.2 else "granted",
                        "captured_at": captured, "recorded_at": recorded, "source": SOURCES[seq % 4],
                        "method": METHODS[seq % 4], "policy_version": "privacy-2026-01" if seq % 3 else None,
                        "collection_point": "https://shop.example/signup" if seq % 2 else None,
                        "actor": "bench-client",
                        "evidence": {"form": "signup", "ip": f"203.0.113.{seq % 250}", "step": round_} if seq % 4 == 0 else None,
                    }
                    event["hash"] = chains.event_hash(event)
                    head_event[i], head_hash[i] = event["event_id"], event["hash"]
                    if i == 0:
                        witness.append({**event, "seq": seq})
                    evidence = event["evidence"]
                    rows.append((
                        seq, event["event_id"], TENANT, event["subject_id"], purpose, event["purpose_version"], channel,
                        event["status"], captured, recorded, event["source"], event["method"], event["policy_version"],
                        event["collection_point"], event["actor"],
                        orjson.dumps(evidence).decode() if evidence is not None else None,
                        round_ + 1, event["prev_event_id"], event["prev_hash"], event["hash"],
                    ))
                    if len(rows) == CHUNK or seq == events:
                        t1 = time.perf_counter()
                        await connection.copy_records_to_table("consent_events", records=rows, columns=EVENT_COLUMNS)
                        t2 = time.perf_counter()
                        result.generate_s += t1 - t0
                        result.copy_s += t2 - t1
                        rows = []
                        if seq % 250_000 == 0 or seq == events:
                            print(f"  loaded {seq:>9,} / {events:,} events ({t2 - began:.0f} s)", flush=True)
                        t0 = time.perf_counter()
            assert seq == events and not rows

            t0 = time.perf_counter()
            head_rows = [
                (subject_ids[i], TENANT, lengths[i], head_event[i], head_hash[i]) for i in range(subjects)
            ]
            t1 = time.perf_counter()
            await connection.copy_records_to_table(
                "ledger_chains", records=head_rows,
                columns=["subject_id", "tenant_id", "length", "head_event_id", "head_hash"],
            )
            result.generate_s += t1 - t0
            result.copy_s += time.perf_counter() - t1
            # The ledger's sequence continues after the explicit seqs (the INSERT of the tampering takes the next).
            await connection.execute("SELECT setval(pg_get_serial_sequence('consent_events', 'seq'), $1)", events)
            t0 = time.perf_counter()
            result.states = int((await connection.execute(FILL_STATES, TENANT)).split()[-1])
            result.states_s = time.perf_counter() - t0
            print(f"  consent_state: {result.states:,} rows from the events ({result.states_s:.1f} s)", flush=True)

        t0 = time.perf_counter()
        await connection.execute("VACUUM (ANALYZE) subjects, consent_events, ledger_chains, consent_state")
        result.vacuum_s = time.perf_counter() - t0

        # The same chain from the service's own function for a chain of an older ledger.
        again = chains.chain_events([{k: v for k, v in e.items() if k not in ("chain_index", "prev_event_id",
                                                                              "prev_hash", "hash")} for e in witness])
        result.chain_events_agrees = [e["hash"] for e in again] == [e["hash"] for e in witness]
        result.targets = await pick_targets(connection, lengths, subject_ids)
    finally:
        await connection.close()
    result.total_s = time.perf_counter() - began
    return result


async def pick_targets(connection: asyncpg.Connection, lengths: list[int], subject_ids: list[uuid.UUID]) -> dict:
    """One event in the middle of a chain of at least 3, in each of three different subjects; the event of a
    withdrawn state of a fourth."""
    long = [i for i, n in enumerate(lengths) if n >= 3]
    if len(long) < 3:
        raise RuntimeError("too few events to tamper with three chains of three events or more")
    picks = [long[len(long) // 4], long[len(long) // 2], long[3 * len(long) // 4]]
    targets = {}
    for what, i in zip(("update", "delete", "copy"), picks, strict=True):
        targets[what] = str(await connection.fetchval(
            "SELECT event_id FROM consent_events WHERE subject_id = $1 AND chain_index = 2", subject_ids[i]
        ))
    targets["state"] = str(await connection.fetchval(
        "SELECT event_id FROM consent_state WHERE tenant_id = $1 AND status = 'withdrawn' AND subject_id <> ALL($2::uuid[])"
        " ORDER BY subject_id, purpose, channel LIMIT 1", TENANT, [subject_ids[i] for i in picks],
    ))
    return targets


# ----------------------------------------------------------------------------------------------------- verifying


@dataclass
class Verification:
    label: str
    seconds: float
    events: int
    chains: int
    ok: bool
    problems: int
    rss_before_mb: float
    rss_after_mb: float
    rss_peak_mb: float
    cpu_s: float  # this process
    postgres_cpu_s: float  # its PostgreSQL backends
    other_cores: float  # cores kept busy by other processes meanwhile (others' tests, ...)
    named: list[tuple[str, str]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


async def timed(label: str, db_name: str, work, profile: cProfile.Profile | None = None) -> tuple[Verification, object]:
    """Run `work()` (a verification), measuring time, CPU and this process's memory."""
    malloc_trim()
    before = rss()
    cpu0, pg0, busy0 = time.process_time(), postgres_cpu_seconds(db_name), machine_busy_seconds()
    with ProcessRss(os.getpid(), interval=0.05) as sampler:
        t0 = time.perf_counter()
        if profile is not None:
            profile.enable()
        try:
            out = await work()
        finally:
            if profile is not None:
                profile.disable()
        seconds = time.perf_counter() - t0
    cpu, pg = time.process_time() - cpu0, postgres_cpu_seconds(db_name) - pg0
    # The sampler thread's own CPU counts as "here"; it is small (one /proc read every 50 ms).
    other = max(machine_busy_seconds() - busy0 - cpu - pg, 0.0) / seconds
    after = rss()
    named = sorted((str(p.event_id), p.problem) for p in out.problems)
    result = Verification(
        label, seconds, out.checked, out.chains, out.ok, len(out.problems), mib(before), mib(after),
        mib(max(sampler.peak, after)), cpu, pg, other, named,
    )
    return result, out


def print_verification(v: Verification) -> None:
    print(
        f"  {v.label}: {v.seconds:.1f} s, {v.events:,} events in {v.chains:,} chains ({v.rate:,.0f} events/s),"
        f" ok={v.ok}, {v.problems} problem(s); CPU {v.cpu_s:.1f} s here + {v.postgres_cpu_s:.1f} s PostgreSQL"
        f" (other processes kept {v.other_cores:.1f} cores busy);"
        f" RSS {v.rss_before_mb:.0f} -> {v.rss_after_mb:.0f} MB (peak {v.rss_peak_mb:.0f} MB,"
        f" +{v.rss_peak_mb - v.rss_before_mb:.0f} MB)",
        flush=True,
    )


async def tamper(database: Database, targets: dict[str, str]) -> str:
    """The three changes of tests/services/test_tamper.py and a state flipped, by raw SQL; the forged copy's event id."""
    forged = str(uuid.uuid4())
    columns = (
        "tenant_id, subject_id, purpose, purpose_version, channel, status, captured_at, recorded_at, source, method, "
        "policy_version, collection_point, actor, evidence, chain_index, prev_event_id, prev_hash, hash"
    )
    async with database.pool.acquire() as connection, connection.transaction():
        await connection.execute(
            "UPDATE consent_events SET status = CASE status WHEN 'granted' THEN 'withdrawn' ELSE 'granted' END "
            "WHERE event_id = $1", uuid.UUID(targets["update"])
        )
        await connection.execute("DELETE FROM consent_events WHERE event_id = $1", uuid.UUID(targets["delete"]))
        await connection.execute(
            f"INSERT INTO consent_events (event_id, {columns}) SELECT $1, {columns} FROM consent_events WHERE event_id = $2",
            uuid.UUID(forged), uuid.UUID(targets["copy"]),
        )
        # A withdrawal made an allowance: what a check reads (tests/services/test_state_tamper.py).
        await connection.execute("UPDATE consent_state SET status = 'granted' WHERE event_id = $1", uuid.UUID(targets["state"]))
    return forged


def make_signer(database: BenchDatabase):
    """app.security.Signer(settings), or None (with the reason) where it does not exist yet."""
    try:
        from app import security
    except Exception as exc:
        return None, f"app.security does not import ({type(exc).__name__}: {exc})"
    signer_class = getattr(security, "Signer", None)
    if signer_class is None:
        return None, "app.security has no Signer yet"
    try:
        signer = signer_class(database.settings)
    except Exception as exc:
        return None, f"Signer(settings) failed ({type(exc).__name__}: {exc})"
    if not (callable(getattr(signer, "sign", None)) and callable(getattr(signer, "verify", None))):
        return None, "the Signer has no sign()/verify()"
    return signer, ""


@dataclass
class CheckpointFigures:
    skipped: str = ""
    create_s: float = 0.0
    chains: int = 0
    events: int = 0
    verify: Verification | None = None
    verify_incremental: Verification | None = None
    verify_after_tamper: Verification | None = None


async def verify_phase(database: BenchDatabase, load: Load, profile: bool) -> dict:
    figures: dict = {}
    app_db = await Database.open(database.settings)
    try:
        profiler = cProfile.Profile() if profile else None
        clean, _ = await timed(
            "verify (clean)", database.name,
            lambda: verification.verify(app_db, tenant=TENANT, checkpoint=None), profiler,
        )
        print_verification(clean)
        if profiler is not None:
            print_profile(profiler)
        figures["clean"] = clean

        cp = CheckpointFigures()
        signer, why = make_signer(database)
        if signer is None:
            cp.skipped = why
            print(f"  checkpoints: skipped: {why}")
        else:
            malloc_trim()
            t0 = time.perf_counter()
            async with app_db.transaction() as session:
                checkpoint = await checkpoints.create(session, signer, tenant=TENANT)
            cp.create_s = time.perf_counter() - t0
            cp.chains, cp.events = checkpoint.chains, checkpoint.events
            print(f"  checkpoints.create: {cp.create_s:.1f} s ({cp.chains:,} chains, {cp.events:,} events,"
                  f" {cp.chains / cp.create_s:,.0f} heads/s)", flush=True)
            cp.verify, _ = await timed(
                "checkpoints.verify (clean)", database.name,
                lambda: checkpoints.verify(app_db, signer, tenant=TENANT),
            )
            print_verification(cp.verify)
            cp.verify_incremental, _ = await timed(
                "checkpoints.verify incremental (clean)", database.name,
                lambda: checkpoints.verify(app_db, signer, tenant=TENANT, incremental=True),
            )
            print_verification(cp.verify_incremental)
        figures["checkpoint"] = cp

        forged = await tamper(app_db, load.targets)
        expected = sorted([
            (load.targets["update"], "changed"), (load.targets["delete"], "deleted"), (forged, "inserted"),
            (load.targets["state"], "state_mismatch"),
        ])
        print(f"  tampered: UPDATE status of {load.targets['update']}, DELETE {load.targets['delete']},"
              f" INSERT copy of {load.targets['copy']} as {forged}, consent_state of {load.targets['state']}"
              " withdrawn -> granted", flush=True)
        tampered, _ = await timed(
            "verify (tampered)", database.name, lambda: verification.verify(app_db, tenant=TENANT, checkpoint=None)
        )
        print_verification(tampered)
        exact = tampered.named == expected
        print(f"  exactly the four tampered rows named: {'yes' if exact else 'NO'}")
        if not exact:
            print(f"    expected {expected}\n    named    {tampered.named[:20]}")
        figures["tampered"] = tampered
        figures["tamper_expected"] = expected
        figures["tamper_exact"] = exact

        if signer is not None:
            cp.verify_after_tamper, _ = await timed(
                "checkpoints.verify (tampered)", database.name,
                lambda: checkpoints.verify(app_db, signer, tenant=TENANT),
            )
            print_verification(cp.verify_after_tamper)
            await explain_names(app_db, cp.verify_after_tamper.named, expected)
    finally:
        await app_db.close()
    return figures


async def explain_names(database: Database, named: list[tuple[str, str]], expected: list[tuple[str, str]]) -> None:
    """Each finding beyond the expected ones: does the event exist, is it a chain's head, whose chain is it."""
    for event_id, problem in named:
        if (event_id, problem) in expected:
            print(f"    {event_id} {problem} (expected)")
            continue
        async with database.pool.acquire() as connection:
            row = await connection.fetchrow(
                "SELECT e.subject_id, e.chain_index, c.length, c.head_event_id = e.event_id AS is_head "
                "FROM consent_events e LEFT JOIN ledger_chains c ON c.subject_id = e.subject_id WHERE e.event_id = $1",
                uuid.UUID(event_id) if event_id != "None" else None,
            )
        where = ("not in the table" if row is None else
                 f"exists: subject {row['subject_id']}, chain index {row['chain_index']} of {row['length']}"
                 f"{' (the head)' if row['is_head'] else ''}")
        print(f"    {event_id} {problem} (NOT one of the three: {where})")


def print_profile(profiler: cProfile.Profile) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"audit_verify-{datetime.now().strftime('%Y%m%d-%H%M%S')}.prof"
    profiler.dump_stats(str(path))
    for order in ("cumulative", "tottime"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).strip_dirs().sort_stats(order).print_stats(22)
        lines = text.getvalue().splitlines()
        start = next((n for n, line in enumerate(lines) if "ncalls" in line), 0)
        print(f"\n  profile of the clean verification, by {order} (all of it in {path}):")
        for line in lines[start:]:
            if line.strip():
                print(f"    {line}")
    print()


# ------------------------------------------------------------------------------------------------------- export


@dataclass
class Export:
    format: str
    status: int
    seconds: float = 0.0
    first_byte_s: float = 0.0
    lines: int = 0
    rows: int = 0
    bytes: int = 0
    content_type: str = ""
    server_rss_before_mb: float = 0.0
    server_rss_peak_mb: float = 0.0
    server_rss_after_mb: float = 0.0
    server_cpu_s: float = 0.0
    postgres_cpu_s: float = 0.0
    client_cpu_s: float = 0.0  # this process, reading and counting
    other_cores: float = 0.0  # cores kept busy by other processes meanwhile
    note: str = ""

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def export(server, token: str, fmt: str, db_name: str, timeout: float) -> Export:
    query = urllib.parse.urlencode({**EXPORT_PERIOD, "format": fmt})
    sampler = ProcessRss(server.process.pid, interval=0.05)
    before = sampler.rss()
    cpu0, pg0 = server.cpu_seconds(), postgres_cpu_seconds(db_name)
    client0, busy0 = time.process_time(), machine_busy_seconds()
    connection = http.client.HTTPConnection(HOST, server.port, timeout=timeout)
    try:
        with sampler:
            t0 = time.perf_counter()
            connection.request("GET", f"{EXPORT_PATH}?{query}", headers={"Authorization": f"Bearer {token}"})
            response = connection.getresponse()
            result = Export(fmt, response.status, content_type=response.getheader("Content-Type", ""))
            if response.status != 200:
                result.note = response.read(400).decode(errors="replace")
                return result
            lines = size = 0
            last = b"\n"
            first = None
            while chunk := response.read1(1 << 20):
                if first is None:
                    first = time.perf_counter() - t0
                size += len(chunk)
                lines += chunk.count(b"\n")
                last = chunk[-1:]
            result.seconds = time.perf_counter() - t0
        result.first_byte_s = first or result.seconds
        result.lines = lines + (last != b"\n")  # a last line without its newline
        result.rows = result.lines - 1 if fmt == "csv" and result.lines else result.lines  # the header
        result.bytes = size
    finally:
        connection.close()
    result.server_cpu_s = server.cpu_seconds() - cpu0
    result.postgres_cpu_s = postgres_cpu_seconds(db_name) - pg0
    result.client_cpu_s = time.process_time() - client0
    busy = machine_busy_seconds() - busy0 - result.server_cpu_s - result.postgres_cpu_s - result.client_cpu_s
    result.other_cores = max(busy, 0.0) / result.seconds if result.seconds else 0.0
    result.server_rss_before_mb = mib(before)
    result.server_rss_after_mb = mib(sampler.rss())
    result.server_rss_peak_mb = mib(max(sampler.peak, before))
    return result


def export_phase(database: BenchDatabase, expected_rows: int, timeout: float) -> list[Export]:
    token = mint_token(database, TENANT, "audit:read")
    server = start_consentd(database, "audit_verify", "consentd audit export", EXPORT_PATH)
    results = []
    try:
        for fmt in ("ndjson", "csv"):
            result = export(server, token, fmt, database.name, timeout)
            results.append(result)
            if result.status == 404:
                print(f"  GET {EXPORT_PATH} answers 404: not there yet, skipped ({result.note[:200]})")
                break
            if result.status != 200:
                print(f"  GET {EXPORT_PATH} format={fmt}: {result.status} {result.note[:300]}")
                continue
            print(
                f"  export {fmt}: {result.seconds:.1f} s, {result.rows:,} rows ({result.rate:,.0f} rows/s),"
                f" {mib(result.bytes):.0f} MB ({mib(result.bytes) / result.seconds:.1f} MB/s), first byte after"
                f" {result.first_byte_s:.2f} s, {result.content_type}; server RSS {result.server_rss_before_mb:.0f} ->"
                f" {result.server_rss_after_mb:.0f} MB (peak {result.server_rss_peak_mb:.0f} MB); CPU server"
                f" {result.server_cpu_s:.1f} s, PostgreSQL {result.postgres_cpu_s:.1f} s, client {result.client_cpu_s:.1f} s"
                f" (other processes kept {result.other_cores:.1f} cores busy)"
                + ("" if result.rows == expected_rows else f"  (expected {expected_rows:,} rows)"),
                flush=True,
            )
    finally:
        server.stop()
    return results


# ------------------------------------------------------------------------------------------------------- report


def print_table(load: Load, figures: dict, exports: list[Export], events: int) -> None:
    print(f"\n{'figure':<44} {'seconds':>8} {'events/s':>10} {'RSS before/after/peak MB':>26}")
    print(f"{'load (not part of any other figure)':<44} {load.total_s:>8.1f} {events / load.total_s:>10,.0f}")
    rows: list[Verification | None] = [figures["clean"]]
    cp: CheckpointFigures = figures["checkpoint"]
    if cp.skipped:
        print(f"{'checkpoints: skipped':<44} {cp.skipped}")
    else:
        print(f"{f'checkpoints.create ({cp.chains:,} heads)':<44} {cp.create_s:>8.1f} {cp.events / cp.create_s:>10,.0f}")
        rows += [cp.verify, cp.verify_incremental]
    rows.append(figures["tampered"])
    if cp.verify_after_tamper:
        rows.append(cp.verify_after_tamper)
    for v in rows:
        if v is not None:
            memory = f"{v.rss_before_mb:.0f} / {v.rss_after_mb:.0f} / {v.rss_peak_mb:.0f}"
            print(f"{v.label:<44} {v.seconds:>8.1f} {v.rate:>10,.0f} {memory:>26}")
    for e in exports:
        if e.status == 200:
            memory = f"{e.server_rss_before_mb:.0f} / {e.server_rss_after_mb:.0f} / {e.server_rss_peak_mb:.0f}"
            print(f"{'GET /v1/audit/events ' + e.format + ' (server RSS)':<44} {e.seconds:>8.1f} {e.rate:>10,.0f}"
                  f" {memory:>26}")
        else:
            print(f"{'GET /v1/audit/events ' + e.format:<44} answered {e.status}: skipped")
    clean = figures["clean"]
    budget = TARGET_VERIFY_SECONDS_PER_MILLION * events / 1_000_000
    print(f"\n  verification of {events:,} events: {clean.seconds:.1f} s, expected < {budget:.0f} s:"
          f" {'MET' if clean.seconds < budget else 'NOT MET'}; memory grew by"
          f" {clean.rss_peak_mb - clean.rss_before_mb:.0f} MB at its peak")
    print(f"  tampering: exactly the four rows named: {'yes' if figures['tamper_exact'] else 'NO'}")


# --------------------------------------------------------------------------------------------------------- main


async def drop(database: BenchDatabase, timeout: float) -> None:  # noqa: ASYNC109 - asyncpg's per-call timeouts
    connection = await asyncpg.connect(database.admin_url, timeout=min(timeout, 30))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)', timeout=timeout)
    finally:
        await connection.close()


def interrupted(exc: BaseException | None) -> bool:
    """Whether a KeyboardInterrupt is among the exceptions that led to `exc`."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the ledger (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=20261122, help="random seed of the ledger")
    parser.add_argument("--profile", action="store_true", help="cProfile the first verification and print the top")
    parser.add_argument("--skip-export", action="store_true", help="do not start a server for the export")
    parser.add_argument("--export-timeout", type=float, default=900, help="socket timeout of the export (s)")
    parser.add_argument("--drop-timeout", type=float, default=120, help="seconds allowed to drop the database")
    parser.add_argument("--keep-db", action="store_true", help="leave the database in place (its name is printed)")
    args = parser.parse_args()
    if args.events < 100:
        parser.error("--events must be at least 100")
    return args


def main() -> int:
    args = parse_args()
    database = BenchDatabase(f"consentd_bench_audit_{uuid.uuid4().hex[:10]}")
    started = time.perf_counter()
    try:
        print(f"creating {database.name}", flush=True)
        asyncio.run(database.create([TENANT]))
        print(f"loading {args.events:,} chained events", flush=True)
        load = asyncio.run(load_ledger(database, args.events, args.seed))
        print(
            f"  load: {load.total_s:.1f} s for {load.events:,} events of {load.subjects:,} subjects (generating and"
            f" hashing {load.generate_s:.1f} s, COPY {load.copy_s:.1f} s, VACUUM ANALYZE {load.vacuum_s:.1f} s);"
            f" chains.chain_events gives the same hashes: {'yes' if load.chain_events_agrees else 'NO'}",
            flush=True,
        )
        print("verifying", flush=True)
        figures = asyncio.run(verify_phase(database, load, args.profile))
        exports: list[Export] = []
        if args.skip_export:
            print("  export: skipped (--skip-export)")
        else:
            print("exporting", flush=True)
            exports = export_phase(database, args.events, args.export_timeout)
        print_table(load, figures, exports, args.events)
        print(f"total time {time.perf_counter() - started:.0f} s")
        path = write_results("audit_verify", {
            "args": vars(args), "database": database.name, "load": asdict(load),
            "verify": {k: asdict(v) if hasattr(v, "__dataclass_fields__") else v for k, v in figures.items()},
            "exports": [asdict(e) for e in exports],
        })
        print(f"summary in {path}")
        return 0
    except Exception as exc:
        # Ctrl-C (or SIGTERM) in the middle of a COPY surfaces as asyncpg's error about the interrupted operation.
        if interrupted(exc):
            print("\ninterrupted")
            return 130
        raise
    finally:
        if args.keep_db:
            print(f"database {database.name} kept (--keep-db); drop it with:"
                  f" psql -c 'DROP DATABASE \"{database.name}\" WITH (FORCE)'")
        else:
            t0 = time.perf_counter()
            try:
                asyncio.run(asyncio.wait_for(drop(database, args.drop_timeout), args.drop_timeout + 5))
                print(f"dropped {database.name} ({time.perf_counter() - t0:.1f} s)")
            except BaseException as exc:
                print(f"WARNING: could not drop {database.name}: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    run_main(main)
