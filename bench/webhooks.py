"""Webhooks at load: consent writes with and without two subscribed endpoints, the time from commit to delivery,
and checks while a receiver hangs, all against the same `consentd serve` in one run.

    .venv/bin/python bench/webhooks.py                  # 10,000 writes per phase
    .venv/bin/python bench/webhooks.py --writes 2000 --check-seconds 5

1. Creates `consentd_webhooks_bench` afresh (migrated, tenant `bench`) and starts `consentd serve` (one worker, its
   scheduled delivery on, CONSENTD_WEBHOOK_ALLOW_HOSTS=127.0.0.1) and two receivers in a process of their own
   (http.server on loopback): one that answers 204 at once and writes each event's arrival time, one that never
   answers (the delivery times out).
2. Writes: --writes POST /v1/consents (a new subject each, marketing/email granted) from --connections concurrent
   clients, first with no endpoint, then with two endpoints subscribed to consent.changed (both on the fast
   receiver). Prints the throughput of each and their ratio (target: the webhooks cost the writer nothing it has to
   wait for), and for the second phase the time from each write's answer (its commit) to each delivery's arrival
   (p50, p99), matched by the ledger event id the webhook carries; then the same lag for --paced writes at --rate a
   second, a load the server keeps up with.
3. Checks: POST /v1/checks for --check-seconds with no endpoint, then with an endpoint on the hanging receiver while
   a trickle of writes (one every 50 ms, in both phases) keeps giving it events. Prints both throughputs and the
   ratio (target >= 0.95).
It only reports.
"""

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from harness import BenchDatabase, mint_token, percentile, run_main, start_consentd, write_results

DB_NAME = "consentd_webhooks_bench"
TENANT = "bench"
RECEIVERS = r"""
import json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
out = open(sys.argv[1], "a", buffering=1)
class Fast(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        arrived = time.time()
        self.send_response(204); self.send_header("Content-Length", "0"); self.end_headers()
        data = json.loads(body)["data"]
        out.write(json.dumps({"event_id": data.get("event_id"), "at": arrived, "id": self.headers["webhook-id"]}) + "\n")
    def log_message(self, *a): pass
class Hang(BaseHTTPRequestHandler):
    def do_POST(self):
        time.sleep(3600)
    def log_message(self, *a): pass
fast, hang = ThreadingHTTPServer(("127.0.0.1", 0), Fast), ThreadingHTTPServer(("127.0.0.1", 0), Hang)
hang.daemon_threads = fast.daemon_threads = True
print(fast.server_address[1], hang.server_address[1], flush=True)
threading.Thread(target=hang.serve_forever, daemon=True).start()
fast.serve_forever()
"""


async def write_phase(base: str, token: str, writes: int, connections: int, tag: str) -> tuple[float, dict[str, float]]:
    """`writes` consent writes; (seconds, answer time by ledger event id)."""
    answered: dict[str, float] = {}
    counter = iter(range(writes))
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=30) as http:

        async def worker() -> None:
            for n in counter:
                response = await http.post("/v1/consents", json={
                    "subject": {"email": f"{tag}-{n}@bench.example"},
                    "decisions": [{"purpose": "marketing", "channel": "email", "status": "granted"}],
                })
                response.raise_for_status()
                answered[response.json()["events"][0]["event_id"]] = time.time()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return time.perf_counter() - started, answered


async def paced_phase(base: str, token: str, writes: int, rate: float) -> dict[str, float]:
    """`writes` consent writes at about `rate` a second (a load the server keeps up with); answer times by event id."""
    answered: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        started = time.perf_counter()
        for n in range(writes):
            await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
            response = await http.post("/v1/consents", json={
                "subject": {"email": f"paced-{n}@bench.example"},
                "decisions": [{"purpose": "marketing", "channel": "email", "status": "granted"}],
            })
            response.raise_for_status()
            answered[response.json()["events"][0]["event_id"]] = time.time()
    return answered


def lags_of(arrivals: Path, answered: dict[str, float], expected: int, wait: float) -> list[float]:
    """Seconds from each write's answer to each delivery's arrival, once `expected` arrived (or `wait` passed)."""
    until = time.monotonic() + wait
    while True:
        rows = [json.loads(line) for line in arrivals.read_text().splitlines()] if arrivals.exists() else []
        mine = [row for row in rows if row["event_id"] in answered]
        if len(mine) >= expected or time.monotonic() > until:
            return [row["at"] - answered[row["event_id"]] for row in mine]
        time.sleep(0.5)


async def check_phase(base: str, token: str, seconds: float, connections: int, trickle: bool) -> int:
    """Checks answered in `seconds` (and, with `trickle`, a write every 50 ms meanwhile)."""
    done = 0
    limits = httpx.Limits(max_connections=connections + 1, max_keepalive_connections=connections + 1)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=30) as http:
        until = time.perf_counter() + seconds

        async def checker(n: int) -> None:
            nonlocal done
            while time.perf_counter() < until:
                response = await http.post("/v1/checks", json={
                    "subject": {"email": f"plain-{n % 500}@bench.example"}, "purpose": "marketing", "channel": "email",
                })
                response.raise_for_status()
                done += 1

        async def writer() -> None:
            n = 0
            while trickle and time.perf_counter() < until:
                await http.post("/v1/consents", json={
                    "subject": {"email": f"trickle-{n}@bench.example"},
                    "decisions": [{"purpose": "marketing", "channel": "email", "status": "granted"}],
                })
                n += 1
                await asyncio.sleep(0.05)

        await asyncio.gather(writer(), *(checker(n) for n in range(connections)))
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--check-seconds", type=float, default=15.0)
    parser.add_argument("--paced", type=int, default=1000, help="writes of the paced phase (default 1,000)")
    parser.add_argument("--rate", type=float, default=50.0, help="their rate a second (default 50)")
    args = parser.parse_args()
    database = BenchDatabase(DB_NAME)
    database.env["CONSENTD_WEBHOOK_ALLOW_HOSTS"] = "127.0.0.1"
    database.env["CONSENTD_WEBHOOK_TIMEOUT"] = "5"
    print(f"creating {DB_NAME}", flush=True)
    asyncio.run(database.create([TENANT]))
    token = mint_token(database, TENANT, "admin")
    arrivals = Path(tempfile.mkdtemp(prefix="consentd-webhooks-")) / "arrivals.ndjson"
    receivers = subprocess.Popen([sys.executable, "-c", RECEIVERS, str(arrivals)], stdout=subprocess.PIPE, text=True)
    server = start_consentd(database, "webhooks", "consentd", "/healthz")
    try:
        assert receivers.stdout is not None
        fast_port, hang_port = receivers.stdout.readline().split()
        base = f"http://127.0.0.1:{server.port}"
        admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        plain, _ = asyncio.run(write_phase(base, token, args.writes, args.connections, "plain"))
        for name in ("warehouse", "crm"):
            body = {"url": f"http://127.0.0.1:{fast_port}/{name}", "events": ["consent.changed"]}
            admin.put(f"/v1/webhooks/{name}", json=body).raise_for_status()
        hooked, answered = asyncio.run(write_phase(base, token, args.writes, args.connections, "hooked"))
        lags = lags_of(arrivals, answered, 2 * args.writes, wait=300)
        paced_answers = asyncio.run(paced_phase(base, token, args.paced, args.rate))
        paced = lags_of(arrivals, paced_answers, 2 * args.paced, wait=60)
        for name in ("warehouse", "crm"):
            admin.delete(f"/v1/webhooks/{name}").raise_for_status()
        # Alternating, twice: no endpoint, then an endpoint on the receiver that never answers.
        quiet, stuck = [], []
        for _ in range(2):
            admin.delete("/v1/webhooks/stuck")
            quiet.append(asyncio.run(check_phase(base, token, args.check_seconds, args.connections, trickle=True)))
            body = {"url": f"http://127.0.0.1:{hang_port}/", "events": ["consent.changed"]}
            admin.put("/v1/webhooks/stuck", json=body).raise_for_status()
            stuck.append(asyncio.run(check_phase(base, token, args.check_seconds, args.connections, trickle=True)))
            failed = len(admin.get("/v1/webhooks/stuck/deliveries", params={"status": "failed", "limit": 200}).json()["deliveries"])
        admin.close()
    finally:
        server.stop()
        receivers.kill()
    print(f"\n{args.writes:,} consent writes, {args.connections} connections")
    print(f"  no endpoint                 {args.writes / plain:8.1f} writes/s")
    print(f"  two endpoints subscribed    {args.writes / hooked:8.1f} writes/s   ratio {plain / hooked:.3f}")
    for label, seconds, count in (("at full load", lags, args.writes), (f"paced, {args.rate:.0f}/s", paced, args.paced)):
        if seconds:
            print(f"  commit -> delivery, {label:14s} p50 {percentile(seconds, 0.5) * 1000:7.0f} ms, p99"
                  f" {percentile(seconds, 0.99) * 1000:7.0f} ms ({len(seconds):,} of {2 * count:,} deliveries)")
    print(f"\nchecks for {args.check_seconds:.0f} s, {args.connections} connections, a write every 50 ms meanwhile")
    for n, (q, h) in enumerate(zip(quiet, stuck, strict=True), start=1):
        print(f"  round {n}: no endpoint {q / args.check_seconds:7.1f} checks/s, a receiver that hangs"
              f" {h / args.check_seconds:7.1f} checks/s, ratio {h / q:.3f}")
    print(f"  both rounds: ratio {sum(stuck) / sum(quiet):.3f} (target >= 0.95; {failed} deliveries timed out in the last)")
    write_results("webhooks", {
        "writes": args.writes, "plain_seconds": plain, "hooked_seconds": hooked, "lags": lags, "paced_lags": paced,
        "checks_quiet": quiet, "checks_stuck": stuck, "failed_deliveries": failed,
    })
    return 0


if __name__ == "__main__":
    run_main(main)
