"""The real thing: `consentd migrate`, `demo`, `token` and `serve` as subprocesses, HTTP over a socket.

One server per module (SQLite file in a temporary folder), always terminated; every wait is bounded.
"""

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_IDENTIFIER_KEY, TEST_SECRET, assert_problem, bearer
from tests.support.postgres import free_port
from tests.support.server import COMMAND_TIMEOUT, CONSENTD, stop, wait_until_healthy

REQUEST_TIMEOUT = 10

# Identifiers the server is given; none of them may show up in its log.
EMAIL = "Server.Privacy-Probe@Example.com"
PHONE = "07911 123456"
PHONE_E164 = "+447911123456"
EXTERNAL_ID = "EXT-privacy-probe-7f3a"


def consentd_env(database_url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONSENTD_")}
    env.update(
        CONSENTD_DATABASE_URL=database_url,
        CONSENTD_JWT_SECRET=TEST_SECRET,
        CONSENTD_IDENTIFIER_KEY=TEST_IDENTIFIER_KEY,
        CONSENTD_ENV="test",
        PYTHONUNBUFFERED="1",
    )
    return env


def run_consentd(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [CONSENTD, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    assert result.returncode == 0, f"consentd {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def assert_jwt(text: str) -> str:
    parts = text.split(".")
    assert len(parts) == 3 and all(parts), f"not a compact JWT: {text!r}"
    return text


@dataclass
class Server:
    base_url: str
    env: dict[str, str]
    admin_token: str
    log_path: Path
    process: subprocess.Popen

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(env: dict[str, str], workdir: Path, admin_token: str) -> Iterator[Server]:
    """Start `consentd serve` on a free port; yield once it is healthy; always stop it."""
    port = free_port()
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [CONSENTD, "serve", "--port", str(port)], env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_healthy(process, base_url, log_path)
        yield Server(base_url, env, admin_token, log_path, process)
    finally:
        stop(process)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("server")
    env = consentd_env(f"sqlite+aiosqlite:///{workdir / 'consentd.db'}")
    run_consentd(env, "migrate", cwd=workdir)
    demo = run_consentd(env, "demo", cwd=workdir)
    admin_token = assert_jwt(demo.stdout.strip())
    assert demo.stdout.count("\n") == 1, f"demo prints only the token on stdout: {demo.stdout!r}"
    assert "demo" in demo.stderr
    yield from start_server(env, workdir, admin_token)


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers=bearer(server.admin_token), timeout=REQUEST_TIMEOUT) as client:
        yield client


def consent(subject: dict, purpose: str, channel: str | None, status: str, **extra: object) -> dict:
    return {"subject": subject, "decisions": [{"purpose": purpose, "channel": channel, "status": status}], **extra}


def test_record_check_ready_and_metrics(http: httpx.Client):
    recorded = http.post(
        "/v1/consents",
        json=consent({"email": EMAIL}, "marketing", "email", "granted", identifiers={"phone": PHONE}),
    )
    assert recorded.status_code == 201, recorded.text
    subject_id = recorded.json()["subject_id"]

    for subject in ({"email": EMAIL}, {"email": EMAIL.lower()}, {"phone": PHONE_E164}, {"subject_id": subject_id}):
        answer = http.post("/v1/checks", json={"subject": subject, "purpose": "marketing", "channel": "email"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["allowed"], body["reason"], body["subject_id"]) == (True, "consent_granted", subject_id)

    batch = http.post(
        "/v1/checks/batch",
        json={"checks": [{"subject": {"email": EMAIL}, "purpose": "marketing", "channel": "sms"}]},
    )
    assert batch.status_code == 200, batch.text
    assert batch.json()["results"][0]["reason"] == "no_consent"

    ready = http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready"}

    metrics = http.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "consentd_check_decisions_total" in metrics.text
    assert 'consentd_check_decisions_total{allowed="true",reason="consent_granted"}' in metrics.text
    assert "consentd_request_duration_seconds" in metrics.text
    # Labelled by route template: never a raw path (which could carry an id).
    assert 'route="/v1/checks"' in metrics.text


def test_openapi_and_problem_over_the_socket(http: httpx.Client, server: Server):
    assert http.get("/openapi.json").json()["info"]["title"] == "consentd"
    missing = httpx.post(f"{server.base_url}/v1/checks", json={}, timeout=REQUEST_TIMEOUT)
    assert_problem(missing, 401)
    assert missing.headers.get("www-authenticate", "").lower().startswith("bearer")
    assert "server" not in missing.headers  # serve runs with server_header=False
    assert_problem(http.get("/nowhere"), 404)


def test_cli_token_has_only_its_scopes(server: Server, http: httpx.Client):
    recorded = http.post("/v1/consents", json=consent({"external_id": EXTERNAL_ID}, "market_research", "phone", "granted"))
    assert recorded.status_code == 201, recorded.text

    minted = run_consentd(server.env, "token", "--tenant", "demo", "--scopes", "checks:read")
    assert minted.stdout.count("\n") == 1, f"token prints only the JWT: {minted.stdout!r}"
    reader = assert_jwt(minted.stdout.strip())

    with httpx.Client(base_url=server.base_url, headers=bearer(reader), timeout=REQUEST_TIMEOUT) as client:
        answer = client.post(
            "/v1/checks", json={"subject": {"external_id": EXTERNAL_ID}, "purpose": "market_research", "channel": "phone"}
        )
        assert answer.status_code == 200, answer.text
        assert (answer.json()["allowed"], answer.json()["reason"]) == (True, "consent_granted")
        refused = client.post(
            "/v1/consents", json=consent({"external_id": EXTERNAL_ID}, "market_research", "phone", "withdrawn")
        )
        assert_problem(refused, 403)
    # The refused write changed nothing.
    again = http.post(
        "/v1/checks", json={"subject": {"external_id": EXTERNAL_ID}, "purpose": "market_research", "channel": "phone"}
    )
    assert again.json()["allowed"] is True


def test_identifiers_never_logged(server: Server, http: httpx.Client):
    # Successful calls, and calls that fail on the identifiers themselves (error paths log too).
    assert http.post(
        "/v1/consents", json=consent({"email": EMAIL}, "marketing", "post", "granted", identifiers={"phone": PHONE})
    ).status_code == 201
    assert http.post("/v1/subjects/lookup", json={"email": EMAIL}).status_code == 200
    assert http.post("/v1/checks", json={"subject": {"phone": PHONE}, "purpose": "marketing", "channel": "sms"}).status_code == 200
    assert_problem(http.post("/v1/checks", json={"subject": {"email": f"not an email {EMAIL}@"}, "purpose": "marketing"}), 422)
    assert_problem(http.post("/v1/checks", json={"subject": {"phone": f"{PHONE} 99 99 99 99"}, "purpose": "marketing"}), 422)
    assert_problem(http.post("/v1/checks", json={"subject": {"email": EMAIL}, "purpose": "no_such_purpose"}), 404)
    time.sleep(0.3)  # the access log line of the last request

    log = server.log()
    assert "POST /v1/checks" in log, "the access log is expected to be on (it is the log being checked)"
    for secret in (EMAIL, EMAIL.lower(), "privacy-probe@example.com", PHONE, PHONE_E164, "7911123456", "7911 123456",
                   EXTERNAL_ID):
        assert secret not in log, f"an identifier ({secret!r}) appears in the server log:\n{log}"
