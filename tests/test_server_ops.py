"""`consentd serve` behind a proxy (--forwarded-allow-ips) and with several workers (/metrics adds them up), as real
subprocesses on loopback. Clients take distinct loopback source addresses (127.0.0.2, 127.0.0.3) to be a visitor
or a trusted load balancer; the addresses in X-Forwarded-For are only header text. Every wait is bounded."""

import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import assert_problem, bearer
from tests.support.postgres import free_port
from tests.support.server import CONSENTD, stop, wait_until_healthy
from tests.test_server import consentd_env, run_consentd

VISITOR = "127.0.0.2"  # connects directly: not a trusted proxy
BALANCER = "127.0.0.3"  # the trusted proxy
RATE = 3  # banner requests a minute per address
METRICS_TOKEN = "metrics-token-0123456789abcdef"
TIMEOUT = 10


@dataclass
class Served:
    base_url: str
    workdir: Path
    process: subprocess.Popen


def serve(workdir: Path, env: dict[str, str], *args: str) -> Iterator[Served]:
    port = free_port()
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [CONSENTD, "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_healthy(process, base_url, log_path)
        yield Served(base_url, workdir, process)
    finally:
        stop(process)


def client_from(source: str, base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, transport=httpx.HTTPTransport(local_address=source), timeout=TIMEOUT)


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("proxy")
    # The option wins over the variable (which names a proxy no test connects from).
    env = consentd_env(f"sqlite+aiosqlite:///{workdir / 'consentd.db'}") | {
        "CONSENTD_PUBLIC_RATE_PER_IP": f"{RATE}/minute", "CONSENTD_FORWARDED_ALLOW_IPS": "127.0.0.9",
    }
    run_consentd(env, "migrate", cwd=workdir)
    yield from serve(workdir, env, "--forwarded-allow-ips", BALANCER)


def banner_statuses(http: httpx.Client, forwarded_for: list[str]) -> list[int]:
    """GET /v1/public/banner once per X-Forwarded-For value. With no key it is a 401, after the per-address rate
    limit (checked first) a 429."""
    return [http.get("/v1/public/banner", headers={"X-Forwarded-For": value}).status_code for value in forwarded_for]


def test_an_untrusted_peer_cannot_escape_the_limit_with_x_forwarded_for(behind_proxy: Served):
    with client_from(VISITOR, behind_proxy.base_url) as visitor:
        rotating = [f"198.51.100.{n}" for n in range(RATE + 2)]
        assert banner_statuses(visitor, rotating) == [401] * RATE + [429, 429]
        refused = visitor.get("/v1/public/banner")
        assert_problem(refused, 429)
        assert int(refused.headers["retry-after"]) >= 1


def test_clients_behind_a_trusted_proxy_get_their_own_buckets(behind_proxy: Served):
    with client_from(BALANCER, behind_proxy.base_url) as balancer:
        assert banner_statuses(balancer, ["203.0.113.10"] * RATE) == [401] * RATE
        # The same visitor again, prepending rotating addresses of its own: the proxy appended the real one, the
        # right-most address not of a trusted proxy, so the limit holds.
        spoofed = [f"198.51.100.{n}, 203.0.113.10" for n in range(3)]
        assert banner_statuses(balancer, spoofed) == [429, 429, 429]
        # Another visitor behind the same proxy is not held back by the first.
        assert banner_statuses(balancer, ["203.0.113.11"] * RATE) == [401] * RATE
        assert banner_statuses(balancer, ["203.0.113.11"]) == [429]
        # Through two trusted hops (the proxy and one before it, both listed): still the visitor's address.
        assert banner_statuses(balancer, [f"203.0.113.12, {BALANCER}"]) == [401]


def test_a_malformed_proxy_list_is_refused(tmp_path: Path):
    env = consentd_env(f"sqlite+aiosqlite:///{tmp_path / 'consentd.db'}")
    # 10.0.0.1/8 has host bits set: uvicorn would take it for a name that never matches and trust no proxy.
    result = subprocess.run(
        [CONSENTD, "serve", "--forwarded-allow-ips", "10.0.0.1/8"], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "10.0.0.1/8" in result.stderr and "which is not an IP address or network" in result.stderr


# --- Several workers: one /metrics ------------------------------------------------------------------------------

REQUESTS = 200


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("workers")
    (workdir / "tmp").mkdir()
    # TMPDIR: the metrics folder serve makes for itself lands where the test can see it.
    env = consentd_env(f"sqlite+aiosqlite:///{workdir / 'consentd.db'}") | {
        "TMPDIR": str(workdir / "tmp"), "CONSENTD_METRICS_TOKEN": METRICS_TOKEN,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    run_consentd(env, "migrate", cwd=workdir)
    yield from serve(workdir, env, "--workers", "2")


def metrics_folders(served: Served) -> list[Path]:
    return sorted((served.workdir / "tmp").glob("consentd-metrics-*"))


def worker_pids(folder: Path) -> set[str]:
    """The processes that wrote request metrics (files histogram_<pid>.db)."""
    return {path.stem.partition("_")[2] for path in folder.glob("histogram_*.db")}


def healthz_count(base_url: str) -> float:
    response = httpx.get(f"{base_url}/metrics", headers=bearer(METRICS_TOKEN), timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "consentd_request_duration_seconds_count" and sample.labels.get("route") == "/healthz"
    )


def test_metrics_add_up_every_worker(two_workers: Served):
    [folder] = metrics_folders(two_workers)
    before = healthz_count(two_workers.base_url)

    def healthz(_: int) -> int:  # a new connection each time, so that both workers accept some
        return httpx.get(f"{two_workers.base_url}/healthz", timeout=TIMEOUT).status_code

    # Again until both workers have answered some (bounded): on a loaded machine one may accept hundreds in a row.
    sent = 0
    with ThreadPoolExecutor(8) as pool:
        while sent == 0 or (len(worker_pids(folder)) < 2 and sent < 20 * REQUESTS):
            assert set(pool.map(healthz, range(REQUESTS))) == {200}
            sent += REQUESTS
    assert len(worker_pids(folder)) == 2, f"both workers were expected to answer some of {sent} requests"

    # A worker observes a request's latency just after sending the answer: wait (bounded) for the last ones.
    deadline = time.monotonic() + 5
    while (counted := healthz_count(two_workers.base_url) - before) < sent and time.monotonic() < deadline:
        time.sleep(0.1)
    assert counted == sent


def test_metrics_need_the_token_when_one_is_set(two_workers: Served):
    for headers in ({}, bearer("wrong"), {"Authorization": f"Basic {METRICS_TOKEN}"}):
        response = httpx.get(f"{two_workers.base_url}/metrics", headers=headers, timeout=TIMEOUT)
        assert_problem(response, 401)
    assert METRICS_TOKEN not in (two_workers.workdir / "server.log").read_text(errors="replace")


def test_the_metrics_folder_is_removed_at_exit(two_workers: Served):
    assert len(metrics_folders(two_workers)) == 1
    stop(two_workers.process)
    assert two_workers.process.returncode == 0, (two_workers.workdir / "server.log").read_text(errors="replace")
    assert metrics_folders(two_workers) == []
