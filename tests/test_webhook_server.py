"""Webhook delivery by a real `consentd serve`: a server killed mid-delivery loses nothing, and after a restart the
event arrives again with the same webhook-id, verified by the `standardwebhooks` library."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from standardwebhooks.webhooks import Webhook as Verifier

from tests.conftest import bearer
from tests.test_server import assert_jwt, consentd_env, run_consentd, start_server

DEADLINE = 30


def test_a_server_killed_mid_delivery_delivers_the_event_after_restart(tmp_path):
    received: list[dict] = []
    first_arrived, release = threading.Event(), threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
            if len(received) == 1:
                first_arrived.set()
                release.wait(DEADLINE)  # the first attempt hangs: the server is killed meanwhile
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        env = consentd_env(f"sqlite+aiosqlite:///{tmp_path / 'consentd.db'}")
        env.update(CONSENTD_WEBHOOK_ALLOW_HOSTS="127.0.0.1", CONSENTD_WEBHOOK_TIMEOUT="1")
        run_consentd(env, "migrate", cwd=tmp_path)
        token = assert_jwt(run_consentd(env, "demo", cwd=tmp_path).stdout.strip())
        url = f"http://127.0.0.1:{receiver.server_address[1]}/hooks"
        servers = start_server(env, tmp_path, token)
        server = next(servers)
        with httpx.Client(base_url=server.base_url, headers=bearer(token), timeout=10) as http:
            secret = http.put("/v1/webhooks/crm", json={"url": url, "events": ["consent.changed"]}).json()["secret"]
            decision = {"purpose": "marketing", "channel": "email", "status": "granted"}
            written = http.post("/v1/consents", json={"subject": {"email": "killed@example.org"}, "decisions": [decision]})
            assert written.status_code == 201, written.text
        assert first_arrived.wait(DEADLINE), "the first attempt never came"
        server.process.kill()
        server.process.wait(10)
        servers.close()
        release.set()
        servers = start_server(env, tmp_path, token)
        server = next(servers)
        try:
            until = time.monotonic() + DEADLINE
            while len(received) < 2 and time.monotonic() < until:
                time.sleep(0.2)
        finally:
            servers.close()
        assert len(received) >= 2, "the event was not delivered after the restart"
        assert received[0]["headers"]["webhook-id"] == received[1]["headers"]["webhook-id"]
        event = Verifier(secret).verify(received[1]["body"], received[1]["headers"])
        assert event["type"] == "consent.changed" and event["data"]["subject_id"] == written.json()["subject_id"]
    finally:
        release.set()
        receiver.shutdown()
