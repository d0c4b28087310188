"""POST /v1/checks/stream of a long e-mail list, end to end, against the database doing the same join alone.

    .venv/bin/python bench/stream_throughput.py                         # 1M lines against 1M seeded subjects
    .venv/bin/python bench/stream_throughput.py --subjects 20000 --lines 20000
    .venv/bin/python bench/stream_throughput.py --tuned                 # on a private, tuned cluster

1. Seeds (or reuses) check_throughput.py's database `consentd_bench`: tenant `bench`, --subjects subjects
   `subject<N>@bench.example` with a marketing/email consent state each.
2. Writes a CSV (`email` header) of --lines addresses: distinct seeded ones (a few in upper case), a share of
   unknown ones (--unknown) and a few invalid ones (--invalid).
3. Times e-mail normalisation alone over the list (app.services.subjects.identifiers.normalise, cache cleared), then the
   blind indexes as the app computes them (IdentifierKeys.lookup_hash: normalise + HMAC).
4. The raw baseline, with those blind indexes: asyncpg COPYs (line, blind index) into a temporary table, LEFT JOINs
   subject_identifiers / subjects / consent_state (marketing/email) and reads every row through a cursor; then the
   same join sent as --lines / --unnest-chunk arrays through `unnest` (20 x 50k for 1M lines).
5. Starts `consentd serve` and POSTs the CSV to /v1/checks/stream?purpose=marketing&channel=email with curl, which
   uploads and reads the answer at the same time; samples the server's RSS every 100 ms; then checks that the answer
   has one line per input line, in order, each the kind of answer its input calls for.
6. Prints the times, the ratio stream / COPY-join (target <= 2.5), the server's peak RSS (target < 300 MB) and what
   normalisation alone costs. It only reports: a missed target does not change the exit status.

With --tuned it all runs on a PostgreSQL cluster of its own with production settings (bench/tuned_cluster.py),
seeded afresh, stopped at the end; otherwise on the server BENCH_ADMIN_URL names.

Needs curl. The JSON summary and the server's log go to bench/results/.
"""

import argparse
import asyncio
import contextlib
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg
import orjson
from harness import HOST, RssSampler, mib, mint_token, run_main, seed_check_database, start_consentd, write_results
from tuned_cluster import add_tuned_argument, server_settings, tuned_cluster

from app.services.subjects import identifiers
from app.services.subjects.identifiers import IdentifierKeys, InvalidIdentifier, normalise
from bench.check_throughput import TENANT, _machine_seconds, email_of, postgres_cpu_seconds

PURPOSE, CHANNEL = "marketing", "email"
STREAM_PATH = f"/v1/checks/stream?purpose={PURPOSE}&channel={CHANNEL}"
TARGET_RATIO = 2.5
TARGET_RSS_MB = 300
KNOWN, UNKNOWN, INVALID = 0, 1, 2

# The check's facts for each line, as the batch reader gathers them: the subject behind the blind index, its flags
# and its marketing/email state. LEFT JOINs: unknown addresses get a row too, as they get an answer.
JOIN = """
SELECT w.line, s.id AS subject_id, s.flags, cs.event_id, cs.status, cs.captured_at, cs.policy_version
FROM {source}
LEFT JOIN subject_identifiers si ON si.tenant_id = $1 AND si.id_hash = w.id_hash
LEFT JOIN subjects s ON s.id = si.subject_id
LEFT JOIN consent_state cs ON cs.tenant_id = $1 AND cs.subject_id = s.id AND cs.purpose = $2 AND cs.channel = $3
"""
COPY_JOIN = JOIN.format(source="wanted w")
UNNEST_JOIN = JOIN.format(source="unnest($4::integer[], $5::text[]) AS w(line, id_hash)")


# ------------------------------------------------------------------------------------------------------- input


@dataclass
class Input:
    path: Path
    values: list[str]
    kinds: bytearray  # KNOWN, UNKNOWN or INVALID, one per data line

    def count(self, kind: int) -> int:
        return self.kinds.count(kind)


def write_input(directory: Path, lines: int, subjects: int, unknown: float, invalid: int, seed: int) -> Input:
    """The CSV: distinct seeded addresses where there are enough (5% in upper case), unknown and invalid ones."""
    rng = random.Random(seed)
    invalid_at = set(rng.sample(range(lines), min(invalid, lines)))
    known_lines = [n for n in range(lines) if n not in invalid_at and rng.random() >= unknown]
    if len(known_lines) <= subjects:
        picks = iter(rng.sample(range(subjects), len(known_lines)))
    else:
        picks = iter([rng.randrange(subjects) for _ in known_lines])
    known_set = set(known_lines)
    values, kinds = [], bytearray(lines)
    for n in range(lines):
        if n in invalid_at:
            value, kinds[n] = f"broken{n}.bench.example", INVALID
        elif n in known_set:
            value = email_of(next(picks))
            value = value.upper() if rng.random() < 0.05 else value
        else:
            value, kinds[n] = f"nobody{n}@unknown.example", UNKNOWN
        values.append(value)
    path = directory / "emails.csv"
    path.write_text("email\n" + "\n".join(values) + "\n")
    return Input(path, values, kinds)


def time_hashing(values: list[str], keys: IdentifierKeys) -> tuple[float, float, list[tuple[int, str]]]:
    """Seconds to normalise every address, seconds for lookup_hash of every address, and (line, blind index) of
    the valid ones (line = the data line's number, from 1). The caches are cleared: a campaign list is mostly
    addresses the server has not just seen."""
    identifiers._email.cache_clear()
    started = time.perf_counter()
    for value in values:
        try:  # noqa: SIM105 - timed: contextlib.suppress would add a context manager per address
            normalise("email", value, region=keys.region)
        except InvalidIdentifier:
            pass
    normalise_seconds = time.perf_counter() - started
    identifiers._email.cache_clear()
    records = []
    started = time.perf_counter()
    for number, value in enumerate(values, 1):
        try:  # noqa: SIM105 - timed, as above
            records.append((number, keys.lookup_hash(TENANT, "email", value)))
        except InvalidIdentifier:
            pass
    hash_seconds = time.perf_counter() - started
    identifiers._email.cache_clear()
    return normalise_seconds, hash_seconds, records


# ---------------------------------------------------------------------------------------------------- baseline


@dataclass
class Raw:
    variant: str
    seconds: float
    load_seconds: float  # COPY (the unnest variant sends its arrays with the query: 0)
    first_row_seconds: float  # from the start to the first joined row read
    rows: int
    found: int
    granted: int


async def copy_join(dsn: str, records: list[tuple[int, str]], prefetch: int) -> Raw:
    """COPY the blind indexes into a temporary table, join, read every row through a cursor: one transaction."""
    connection = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        rows = found = granted = 0
        async with connection.transaction():
            await connection.execute(
                "CREATE TEMPORARY TABLE wanted (line integer NOT NULL, id_hash text NOT NULL) ON COMMIT DROP"
            )
            await connection.copy_records_to_table("wanted", records=records, columns=["line", "id_hash"])
            loaded = time.perf_counter()
            first_row = None
            async for row in connection.cursor(COPY_JOIN, TENANT, PURPOSE, CHANNEL, prefetch=prefetch):
                first_row = first_row or time.perf_counter()
                rows += 1
                found += row["subject_id"] is not None
                granted += row["status"] == "granted"
        finished = time.perf_counter()
    finally:
        await connection.close()
    return Raw(
        "COPY + join + cursor", finished - started, loaded - started, (first_row or finished) - started, rows, found,
        granted,
    )


async def unnest_join(dsn: str, records: list[tuple[int, str]], chunk: int) -> Raw:
    """The same join, the blind indexes sent as arrays of `chunk` through unnest, one query each."""
    connection = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        first_row = None
        rows = found = granted = 0
        for start in range(0, len(records), chunk):
            part = records[start : start + chunk]
            result = await connection.fetch(
                UNNEST_JOIN, TENANT, PURPOSE, CHANNEL, [line for line, _ in part], [h for _, h in part]
            )
            first_row = first_row or time.perf_counter()
            rows += len(result)
            found += sum(row["subject_id"] is not None for row in result)
            granted += sum(row["status"] == "granted" for row in result)
        finished = time.perf_counter()
    finally:
        await connection.close()
    arrays = -(-len(records) // chunk)
    return Raw(f"{arrays} x unnest({chunk:,})", finished - started, 0.0, (first_row or finished) - started, rows, found,
               granted)


# ------------------------------------------------------------------------------------------------------ stream


@dataclass
class Stream:
    seconds: float
    first_answer_seconds: float
    http_status: int
    lines: int
    peak_rss_mb: float
    idle_rss_mb: float
    server_cpu_seconds: float
    postgres_cpu_seconds: float
    busy_other_cores: float
    verified: bool
    problems: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)


def post_stream(port: int, token: str, source: Path, answers: Path) -> tuple[float, float, int]:
    """curl uploads the CSV and writes the answer to a file as it arrives (HTTP/1.1, both directions at once).
    Wall seconds, seconds to the first answer line (the file growing, polled every 20 ms), HTTP status."""
    command = [
        "curl", "--silent", "--show-error", "--no-buffer", "--http1.1", "-X", "POST",
        "-H", "Content-Type: text/csv", "-H", f"Authorization: Bearer {token}", "-H", "Expect:",
        "--data-binary", f"@{source}", "--output", str(answers), "--write-out", "%{http_code}",
        f"http://{HOST}:{port}{STREAM_PATH}",
    ]
    started = time.perf_counter()
    first_answer = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as curl:
        while curl.poll() is None:
            if first_answer is None and answers.exists() and answers.stat().st_size:
                first_answer = time.perf_counter() - started
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        status, errors = curl.stdout.read(), curl.stderr.read()
    if curl.returncode != 0:
        raise RuntimeError(f"curl failed ({curl.returncode}): {errors.strip()}")
    return seconds, seconds if first_answer is None else first_answer, int(status)


def verify(answers: Path, data: Input) -> tuple[int, list[str], Counter]:
    """One answer per input line, in order, of the kind the line calls for. Lines may be numbered from the header
    (the first address is line 2) or from the first address (line 1): the first answer tells which."""
    problems: list[str] = []
    reasons: Counter = Counter()
    count = 0
    offset = None

    def problem(text: str) -> None:
        if len(problems) < 10:
            problems.append(text)

    with answers.open("rb") as lines:
        for index, raw in enumerate(lines):
            count += 1
            try:
                answer = orjson.loads(raw)
            except orjson.JSONDecodeError:
                problem(f"answer {index + 1} is not JSON: {raw[:120]!r}")
                continue
            if offset is None:
                offset = answer.get("line", 0) - 1
                if offset not in (0, 1):
                    problem(f"the first answer is for line {answer.get('line')}, expected 1 or 2: {answer}")
            if index >= len(data.kinds):
                problem(f"answer {index + 1} is past the {len(data.kinds):,} input lines: {answer}")
                continue
            if answer.get("line") != index + 1 + (offset or 0):
                problem(f"answer {index + 1} is for line {answer.get('line')}, expected {index + 1 + (offset or 0)}")
            kind = data.kinds[index]
            if "error" in answer:
                reasons[f"error: {answer['error']}"] += 1
                if kind != INVALID:
                    problem(f"line {answer.get('line')} ({data.values[index]}) answered with an error: {answer}")
                continue
            reasons[answer.get("reason")] += 1
            expected_known = kind == KNOWN
            if kind == INVALID or (answer.get("subject_id") is not None) != expected_known:
                problem(f"line {answer.get('line')} ({data.values[index]}): unexpected answer {answer}")
    if count != len(data.kinds):
        problem(f"{count:,} answers for {len(data.kinds):,} input lines")
    return count, problems, reasons


def run_stream(database, data: Input, scratch: Path, token: str) -> Stream:
    server = start_consentd(database, "stream", "consentd POST /v1/checks/stream", STREAM_PATH)
    try:
        answers = scratch / "answers.ndjson"
        with RssSampler(server.process.pid) as sampler:
            time.sleep(0.5)
            idle = sampler.peak
            before = (server.cpu_seconds(), postgres_cpu_seconds(), *_machine_seconds())
            seconds, first_answer, status = post_stream(server.port, token, data.path, answers)
            after = (server.cpu_seconds(), postgres_cpu_seconds(), *_machine_seconds())
        server_cpu, postgres_cpu, busy, _steal = (b - a for a, b in zip(before, after, strict=True))
    finally:
        server.stop()
    lines, problems, reasons = verify(answers, data) if status == 200 else (0, [answers.read_text()[:500]], Counter())
    answers.unlink(missing_ok=True)
    return Stream(
        seconds=seconds, first_answer_seconds=first_answer, http_status=status, lines=lines,
        peak_rss_mb=mib(sampler.peak), idle_rss_mb=mib(idle), server_cpu_seconds=server_cpu,
        postgres_cpu_seconds=postgres_cpu,
        # curl's CPU is in `busy` too: a small share, but counted as "other" here.
        busy_other_cores=max(busy - server_cpu - postgres_cpu, 0.0) / seconds,
        verified=status == 200 and not problems, problems=problems, reasons=dict(reasons.most_common()),
    )


# -------------------------------------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=1_000_000, help="subjects in the seed (default 1,000,000)")
    parser.add_argument("--lines", type=int, default=1_000_000, help="addresses in the list (default 1,000,000)")
    parser.add_argument("--unknown", type=float, default=0.05, help="share of unknown addresses (default 0.05)")
    parser.add_argument("--invalid", type=int, default=100, help="invalid addresses (default 100)")
    parser.add_argument("--unnest-chunk", type=int, default=50_000, help="blind indexes per unnest array (50,000)")
    parser.add_argument("--prefetch", type=int, default=10_000, help="rows per cursor fetch in the baseline (10,000)")
    parser.add_argument("--rounds", type=int, default=1, help="baseline + stream rounds (default 1)")
    parser.add_argument("--seed", type=int, default=20261122, help="random seed of the list")
    parser.add_argument("--reseed", action="store_true", help="drop and rebuild the bench database")
    add_tuned_argument(parser)
    args = parser.parse_args()
    if min(args.subjects, args.lines, args.unnest_chunk, args.prefetch, args.rounds) < 1 or not 0 <= args.unknown < 1:
        parser.error("counts must be positive and --unknown in [0, 1)")
    return args


def print_report(
    args, data: Input, normalise_s: float, hash_s: float, rounds: list[dict], settings: str
) -> dict:
    n = len(data.values)
    print(f"\nPostgreSQL: {settings}")
    print(f"\nlist: {n:,} lines ({data.count(KNOWN):,} seeded, {data.count(UNKNOWN):,} unknown,"
          f" {data.count(INVALID):,} invalid) against {args.subjects:,} seeded subjects")
    print(f"e-mail normalisation alone (identifiers.normalise, {n:,} addresses): {normalise_s:6.2f} s"
          f"  ({normalise_s / n * 1e6:.1f} us each)")
    print(f"blind index as the app computes it (lookup_hash = normalise + HMAC): {hash_s:6.2f} s"
          f"  ({hash_s / n * 1e6:.1f} us each)")
    for number, entry in enumerate(rounds, 1):
        print(f"\nround {number}")
        for raw in entry["raw"]:
            load = f"COPY {raw.load_seconds:.2f} s, " if raw.load_seconds else ""
            print(f"  raw {raw.variant:<30} {raw.seconds:7.2f} s  ({load}first row {raw.first_row_seconds:.2f} s)"
                  f"  {raw.rows:,} rows, {raw.found:,} found, {raw.granted:,} granted")
        s: Stream = entry["stream"]
        print(f"  {'consentd POST /v1/checks/stream':<34} {s.seconds:7.2f} s  HTTP {s.http_status}, {s.lines:,} answer lines,"
              f" first answer after {s.first_answer_seconds:.2f} s, {n / s.seconds:,.0f} lines/s")
        print(f"      server CPU {s.server_cpu_seconds:.1f} s ({s.server_cpu_seconds / n * 1e6:.1f} us/line),"
              f" PostgreSQL CPU {s.postgres_cpu_seconds:.1f} s, other processes {s.busy_other_cores:.2f} cores")
        print(f"      server RSS idle {s.idle_rss_mb:.0f} MB, peak {s.peak_rss_mb:.0f} MB")
        print(f"      answers in order, one per line, of the expected kind: {'yes' if s.verified else 'NO'}")
        for text in s.problems:
            print(f"        {text}")
        print("      reasons: " + ", ".join(f"{reason} {count:,}" for reason, count in s.reasons.items()))
    copy_s = sorted(e["raw"][0].seconds for e in rounds)[len(rounds) // 2]
    unnest_s = sorted(e["raw"][1].seconds for e in rounds)[len(rounds) // 2]
    stream_s = sorted(e["stream"].seconds for e in rounds)[len(rounds) // 2]
    cpu = sorted(e["stream"].server_cpu_seconds for e in rounds)[len(rounds) // 2]
    peak = max(e["stream"].peak_rss_mb for e in rounds)
    ratio = stream_s / copy_s
    ratio_ok, rss_ok = ratio <= TARGET_RATIO, peak < TARGET_RSS_MB
    verified = all(e["stream"].verified for e in rounds)
    print(f"\nsummary{' (medians over ' + str(len(rounds)) + ' rounds)' if len(rounds) > 1 else ''}")
    print(f"  raw COPY + join + cursor          {copy_s:7.2f} s")
    print(f"  raw unnest arrays                 {unnest_s:7.2f} s  ({unnest_s / copy_s:.1f}x COPY-join)")
    print(f"  consentd stream end to end        {stream_s:7.2f} s")
    print(f"  ratio stream / COPY-join          {ratio:7.1f}    target <= {TARGET_RATIO}: {'MET' if ratio_ok else 'NOT MET'}")
    print(f"  peak server RSS                   {peak:7.0f} MB  target < {TARGET_RSS_MB} MB: {'MET' if rss_ok else 'NOT MET'}")
    print(f"  answers verified                  {'yes' if verified else 'NO'}")
    print(f"  normalisation alone               {normalise_s:7.2f} s  = {normalise_s / copy_s:.1f}x the COPY-join,"
          f" {normalise_s / stream_s:.0%} of the stream's time, {normalise_s / cpu:.0%} of the server's CPU")
    print(f"  normalise + HMAC (lookup_hash)    {hash_s:7.2f} s  = {hash_s / copy_s:.1f}x the COPY-join;"
          f" the target allows {TARGET_RATIO * copy_s:.2f} s for everything")
    return {
        "copy_join_seconds": copy_s, "unnest_seconds": unnest_s, "stream_seconds": stream_s, "ratio": ratio,
        "ratio_met": ratio_ok, "peak_rss_mb": peak, "rss_met": rss_ok, "verified": verified,
        "normalise_seconds": normalise_s, "lookup_hash_seconds": hash_s,
    }


def main() -> int:
    args = parse_args()
    if shutil.which("curl") is None:
        print("error: curl is not installed. Install it with:\n    apt-get install -y curl", file=sys.stderr)
        return 2
    # A tuned cluster starts empty: the seed is built in it each time (about 2 minutes for 1M subjects).
    with tuned_cluster() if args.tuned else contextlib.nullcontext():
        return measure(args)


def measure(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    database, seed_seconds = asyncio.run(seed_check_database(args.subjects, args.reseed))
    keys = IdentifierKeys(database.settings.identifier_key, database.settings.default_region)
    token = mint_token(database, TENANT, "checks:read")
    settings = asyncio.run(server_settings(database.dsn))
    with tempfile.TemporaryDirectory(prefix="consentd-stream-") as scratch:
        data = write_input(Path(scratch), args.lines, args.subjects, args.unknown, args.invalid, args.seed)
        print(f"list of {args.lines:,} addresses written; timing normalisation and blind indexes", flush=True)
        normalise_s, hash_s, records = time_hashing(data.values, keys)
        print("warm-up: one COPY-join, not counted", flush=True)
        asyncio.run(copy_join(database.dsn, records, args.prefetch))
        rounds = []
        for number in range(1, args.rounds + 1):
            raw = [
                asyncio.run(copy_join(database.dsn, records, args.prefetch)),
                asyncio.run(unnest_join(database.dsn, records, args.unnest_chunk)),
            ]
            print(f"round {number}: raw {raw[0].seconds:.2f} s (COPY-join), {raw[1].seconds:.2f} s (unnest);"
                  " streaming through consentd", flush=True)
            stream = run_stream(database, data, Path(scratch), token)
            print(f"round {number}: stream {stream.seconds:.2f} s, peak RSS {stream.peak_rss_mb:.0f} MB", flush=True)
            rounds.append({"raw": raw, "stream": stream})
    verdict = print_report(args, data, normalise_s, hash_s, rounds, settings)
    if seed_seconds:
        print(f"\nseeding took {seed_seconds:.1f} s")
    print(f"total time {time.perf_counter() - started:.0f} s")
    write_results("stream_throughput", {
        "args": vars(args), "seed_seconds": seed_seconds, "postgres": settings, **verdict,
        "rounds": [{"raw": [asdict(r) for r in e["raw"]], "stream": asdict(e["stream"])} for e in rounds],
    })
    return 0


if __name__ == "__main__":
    run_main(main)
