"""Completing the erasure of a person with 100,000 events, against the bare UPDATE that clears the same evidence.

    .venv/bin/python bench/erasure.py                   # 100,000 events
    .venv/bin/python bench/erasure.py --events 1000000

1. Creates `consentd_erasure_bench` afresh (migrated, tenants `bench` and `floor`) and COPYs into each one subject
   with an email, a phone and an external id, --events consent events (each with personal evidence), chained as
   the service chains them (ledger/chains.py), and its chain's head.
2. The reference, first: in tenant `floor`, one UPDATE that clears the evidence of the person's events and keeps
   a SHA-256 of it computed by PostgreSQL (the least an erasure of the evidence can cost), then one that clears
   the identifiers' sealed values.
3. Starts `consentd serve`, files an erasure request about the `bench` person (verified) and times
   `POST /v1/requests/{id}/complete`, sampling the server's RSS every 50 ms.
4. Times `consentd audit verify --tenant bench` (it must pass, the erased events counted) and prints everything.
   It only reports.
"""

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import orjson
from harness import BenchDatabase, RssSampler, mib, mint_token, run_consentd, run_main, start_consentd, write_results

from app.models.base import new_id
from app.services.ledger import chains
from app.services.subjects import IdentifierKeys, normalise

DB_NAME = "consentd_erasure_bench"
TENANT, FLOOR = "bench", "floor"
PERSON = {"email": "erased@bench.example", "phone": "+447400123456", "external_id": "crm-000001"}
_COLUMNS = ("event_id", "tenant_id", "subject_id", "purpose", "purpose_version", "channel", "status", "captured_at",
            "recorded_at", "source", "method", "policy_version", "collection_point", "actor", "chain_index",
            "prev_event_id", "prev_hash", "hash", "evidence")


async def seed(database: BenchDatabase, tenant: str, events: int) -> str:
    """One person with these identifiers and `events` chained events in `tenant`; the subject's id."""
    keys = IdentifierKeys(database.settings.identifier_key, database.settings.default_region)
    subject_id = new_id()
    start = datetime(2020, 1, 1, tzinfo=UTC)
    rows = []
    for n in range(events):
        at = start + timedelta(minutes=n)
        rows.append({
            "seq": n, "event_id": new_id(), "tenant_id": tenant, "subject_id": subject_id, "purpose": "marketing",
            "purpose_version": 1, "channel": "email", "status": "granted" if n % 2 else "withdrawn", "captured_at": at,
            "recorded_at": at, "source": "bench", "method": "api", "policy_version": None, "collection_point": None,
            "actor": "bench", "evidence": {"form_text": f"sign me up, {PERSON['email']}", "ip": "192.0.2.1", "n": n},
        })
    chained = chains.chain_events(rows)
    connection = await asyncpg.connect(database.dsn)
    try:
        await connection.execute(
            "INSERT INTO subjects (id, tenant_id, flags, feed_position, created_at) VALUES ($1, $2, '[]', 0, $3)",
            subject_id, tenant, start,
        )
        for kind, value in PERSON.items():
            normal = normalise(kind, value, region=keys.region)
            await connection.execute(
                "INSERT INTO subject_identifiers (tenant_id, id_hash, subject_id, type, value_sealed, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                tenant, keys.blind_index(tenant, kind, normal), subject_id, kind, keys.seal(normal), start,
            )
        await connection.copy_records_to_table(
            "consent_events", columns=_COLUMNS,
            records=[tuple(orjson.dumps(e[c]).decode() if c == "evidence" else e[c] for c in _COLUMNS) for e in chained],
        )
        last = chained[-1]
        await connection.execute(
            "INSERT INTO ledger_chains (subject_id, tenant_id, length, head_event_id, head_hash) VALUES ($1, $2, $3, $4, $5)",
            subject_id, tenant, last["chain_index"], last["event_id"], last["hash"],
        )
        await connection.execute(
            "INSERT INTO consent_state (tenant_id, subject_id, purpose, channel, status, captured_at, recorded_at, event_seq,"
            " event_id, purpose_version, policy_version, feed_position)"
            " SELECT tenant_id, subject_id, purpose, channel, status, captured_at, recorded_at, seq, event_id,"
            " purpose_version, policy_version, 0 FROM consent_events WHERE event_id = $1",
            last["event_id"],
        )
    finally:
        await connection.close()
    return str(subject_id)


async def reference(database: BenchDatabase, subject_id: str) -> float:
    """The floor: the evidence cleared (its SHA-256 kept, computed by PostgreSQL) and the identifiers' values
    cleared, one statement each."""
    connection = await asyncpg.connect(database.dsn)
    try:
        started = time.perf_counter()
        async with connection.transaction():
            await connection.execute(
                "UPDATE consent_events SET evidence_sha256 = encode(sha256(convert_to(evidence::text, 'UTF8')), 'hex'),"
                " evidence = NULL, evidence_erased_at = now()"
                " WHERE tenant_id = $1 AND subject_id = $2::uuid AND evidence IS NOT NULL",
                FLOOR, subject_id,
            )
            await connection.execute(
                "UPDATE subject_identifiers SET value_sealed = '', erased_at = now() WHERE tenant_id = $1 AND subject_id = $2::uuid",
                FLOOR, subject_id,
            )
        return time.perf_counter() - started
    finally:
        await connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="the person's events (default 100,000)")
    args = parser.parse_args()
    if args.events < 1:
        parser.error("--events must be positive")
    database = BenchDatabase(DB_NAME)
    print(f"creating {DB_NAME}: one person with {args.events:,} events in each of two tenants", flush=True)
    asyncio.run(database.create([TENANT, FLOOR]))
    asyncio.run(seed(database, TENANT, args.events))
    floor_subject = asyncio.run(seed(database, FLOOR, args.events))
    bare = asyncio.run(reference(database, floor_subject))
    token = mint_token(database, TENANT, "requests:write checks:read")
    server = start_consentd(database, "erasure", "consentd", "/healthz")
    try:
        assert server.process is not None
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=600,
                          headers={"Authorization": f"Bearer {token}"}) as http:
            filed = http.post("/v1/requests", json={"type": "erasure", "subject": {"email": PERSON["email"]},
                                                    "verified": {"method": "document"}})
            filed.raise_for_status()
            request_id = filed.json()["request_id"]
            with RssSampler(server.process.pid, interval=0.05) as sampler:
                time.sleep(0.3)
                idle = sampler.rss()
                started = time.perf_counter()
                done = http.post(f"/v1/requests/{request_id}/complete")
                seconds = time.perf_counter() - started
            done.raise_for_status()
            answer = http.post("/v1/checks", json={"subject": {"phone": PERSON["phone"]}, "purpose": "marketing", "channel": "email"})
            reason = answer.json()["reason"]
    finally:
        server.stop()
    started = time.perf_counter()
    verified = json.loads(run_consentd(database, "audit", "verify", "--tenant", TENANT).split("\n}")[0] + "\n}")
    verify_seconds = time.perf_counter() - started
    ok = verified["ok"] and verified["erased"] == args.events and reason == "erased"
    print(f"\nerasure of a person with {args.events:,} events")
    print(f"  consentd POST /v1/requests/{{id}}/complete   {seconds:6.2f} s  ({done.json()['outcome']['done'][:2]})")
    print(f"  bare UPDATEs (evidence, identifiers)       {bare:6.2f} s  ratio {seconds / bare:.1f}x")
    print(f"  server RSS idle {mib(idle):.0f} MB, peak {mib(sampler.peak):.0f} MB")
    print(f"  then: a check by the phone answers {reason!r}; consentd audit verify {verify_seconds:.1f} s:"
          f" ok={verified['ok']}, {verified['checked']:,} checked, {verified['erased']:,} erased")
    write_results("erasure", {
        "events": args.events, "seconds": seconds, "bare_seconds": bare, "idle_rss": idle, "peak_rss": sampler.peak,
        "verify_seconds": verify_seconds, "verified": verified["ok"], "reason": reason,
    })
    return 0 if ok else 1


if __name__ == "__main__":
    run_main(main)
