"""Webhooks: endpoints, events from the change feed and the outbox, delivery to a real HTTP receiver that verifies
each one with the `standardwebhooks` library (as a receiver written by others would), retries, 410, rotation, SSRF."""

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook as Verifier

from app.models.base import utcnow
from app.services.scheduled import jobs
from tests.conftest import assert_problem, bearer
from tests.routers.test_requests import act, file
from tests.support.api import iso, record


@dataclass
class Receiver:
    """An HTTP server on loopback that records every POST and answers the next status of `answers` (then 200)."""

    answers: list[int] = field(default_factory=list)
    received: list[dict] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.received.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body, "path": self.path})
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def verified(self, secret: str) -> list[dict]:
        """Every body received, verified with the library and parsed (raises on a bad signature)."""
        return [Verifier(secret).verify(r["body"], r["headers"]) for r in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    assert started.server is not None
    started.server.shutdown()


async def run_jobs(backend) -> None:
    """Rounds of the scheduled work until one finds nothing to do (as the server's loop runs them)."""
    for _ in range(50):
        counts = await jobs.run_once(backend.database, backend.services.sender)
        if not (counts["enqueued"] or counts["attempted"]):
            return
    raise AssertionError("the scheduled work never settled")


async def hook(client, receiver: Receiver, name: str = "crm", events: list[str] | None = None) -> str:
    response = await client.put(f"/v1/webhooks/{name}", json={"url": receiver.url, "events": events or ["consent.changed"]})
    assert response.status_code == 201, response.text
    secret = response.json()["secret"]
    assert secret.startswith("whsec_")
    return secret


async def deliveries(client, name: str = "crm", **params) -> list[dict]:
    response = await client.get(f"/v1/webhooks/{name}/deliveries", params=params)
    assert response.status_code == 200, response.text
    return response.json()["deliveries"]


async def test_a_consent_change_reaches_the_receiver_signed_with_the_feed_s_event_id_and_no_identifier(client, backend, receiver):
    secret = await hook(client, receiver, events=["consent.changed", "subject.erased"])
    written = await record(client, {"email": "hooked@example.org"}, ("marketing", "email", "granted"), ("marketing", "sms", "withdrawn"))
    await run_jobs(backend)
    # Deliveries run side by side: they arrive in any order (as Standard Webhooks allows), each with its time.
    events = sorted(receiver.verified(secret), key=lambda e: e["data"]["channel"])
    assert [(e["type"], e["data"]["channel"], e["data"]["status"]) for e in events] == [
        ("consent.changed", "email", "granted"), ("consent.changed", "sms", "withdrawn"),
    ]
    feed = (await client.get("/v1/changes")).json()["changes"]
    assert sorted(e["data"]["event_id"] for e in events) == sorted(c["event_id"] for c in feed)
    assert {e["data"]["subject_id"] for e in events} == {written["subject_id"]}
    raw = b"".join(r["body"] for r in receiver.received)
    assert b"hooked@example.org" not in raw and b"@" not in raw
    headers = receiver.received[0]["headers"]
    assert headers["webhook-id"].startswith("msg_") and headers["content-type"] == "application/json"
    listed = await deliveries(client)
    assert [(d["type"], d["status"], d["attempts"], d["last_status_code"]) for d in listed] == [
        ("consent.changed", "delivered", 1, 200), ("consent.changed", "delivered", 1, 200),
    ]
    # Running again sends nothing new: each event is enqueued once.
    await run_jobs(backend)
    assert len(receiver.received) == 2


async def test_a_failed_delivery_is_retried_with_the_same_webhook_id_and_410_disables(client, backend, receiver):
    secret = await hook(client, receiver)
    receiver.answers = [500, 302]
    await record(client, {"email": "retry@example.org"}, ("marketing", "email", "granted"))
    await run_jobs(backend)
    [failed] = await deliveries(client)
    assert (failed["status"], failed["attempts"], failed["last_status_code"]) == ("failed", 1, 500)
    assert failed["next_attempt_at"] is not None
    due = utcnow() + timedelta(seconds=3)
    assert due < _parse(failed["next_attempt_at"]) <= due + timedelta(seconds=5)
    await _make_due(backend)
    await run_jobs(backend)  # a redirect is a failure, never followed
    [redirected] = await deliveries(client)
    assert (redirected["status"], redirected["attempts"], redirected["last_status_code"]) == ("failed", 2, 302)
    assert _parse(redirected["next_attempt_at"]) > utcnow() + timedelta(minutes=4)
    retried = await client.post(f"/v1/webhooks/crm/deliveries/{failed['delivery_id']}/retry")
    assert retried.status_code == 200 and retried.json()["status"] == "delivered" and retried.json()["attempts"] == 3
    ids = {r["headers"]["webhook-id"] for r in receiver.received}
    assert len(receiver.received) == 3 and len(ids) == 1
    assert len(receiver.verified(secret)) == 3

    receiver.answers = [410]
    await record(client, {"email": "gone@example.org"}, ("marketing", "email", "granted"))
    await run_jobs(backend)
    endpoint = (await client.get("/v1/webhooks/crm")).json()
    assert endpoint["enabled"] is False and "410" in endpoint["disabled_reason"]
    assert (await deliveries(client, status="dead"))[0]["last_status_code"] == 410
    await record(client, {"email": "after@example.org"}, ("marketing", "email", "granted"))
    await run_jobs(backend)
    assert len(receiver.received) == 4  # disabled: nothing more


async def test_a_rotated_secret_and_the_old_one_both_sign_for_a_day(client, backend, receiver):
    old = await hook(client, receiver)
    rotated = await client.post("/v1/webhooks/crm/rotate-secret")
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new != old and (await client.get("/v1/webhooks/crm")).json().get("secret") is None
    await record(client, {"email": "rotate@example.org"}, ("marketing", "email", "granted"))
    await run_jobs(backend)
    assert len(receiver.verified(old)) == len(receiver.verified(new)) == 1
    assert len(receiver.received[0]["headers"]["webhook-signature"].split(" ")) == 2


async def test_requests_erasures_and_rectifications_are_told(client, backend, receiver):
    secret = await hook(client, receiver, events=["subject.erased", "subject.rectified", "request.created", "request.completed"])
    subject_id = (await record(client, {"email": "moving@example.org"}, ("marketing", "email", "granted")))["subject_id"]
    rectify = await file(client, "rectification", subject={"email": "moving@example.org"}, verified={"method": "account"},
                         details={"add": {"email": "moved@example.org"}, "remove": [{"email": "moving@example.org"}]})
    await act(client, rectify["request_id"], "complete")
    erase = await file(client, "erasure", subject={"email": "moved@example.org"}, verified={"method": "account"})
    await act(client, erase["request_id"], "complete")
    await run_jobs(backend)
    events = receiver.verified(secret)
    kinds = [e["type"] for e in events]
    assert kinds.count("request.created") == 2 and kinds.count("request.completed") == 2
    rectified = next(e for e in events if e["type"] == "subject.rectified")
    assert rectified["data"]["subject_id"] == subject_id and rectified["data"]["request_id"] == rectify["request_id"]
    erased = next(e for e in events if e["type"] == "subject.erased")
    assert erased["data"] == {"subject_id": subject_id, "status": "erased"}
    assert b"@" not in b"".join(r["body"] for r in receiver.received)


async def test_a_write_that_rolls_back_sends_nothing(client, backend, receiver):
    await hook(client, receiver, events=["subject.rectified", "request.completed", "consent.changed"])
    taken = await record(client, {"email": "holder@example.org"}, ("marketing", "email", "granted"))
    await run_jobs(backend)
    receiver.received.clear()
    await record(client, {"email": "other@example.org"}, ("marketing", "email", "granted"))
    filed = await file(client, "rectification", subject={"email": "other@example.org"}, verified={"method": "account"},
                       details={"add": {"email": "spare@example.org"}})
    # Another person takes the address before completion: the completion is refused and rolls back.
    await record(client, {"subject_id": taken["subject_id"]}, ("marketing", "sms", "granted"), identifiers={"email": "spare@example.org"})
    assert_problem(await client.post(f"/v1/requests/{filed['request_id']}/complete"), 409)
    await run_jobs(backend)
    assert [json.loads(r["body"])["type"] for r in receiver.received] == ["consent.changed", "consent.changed"]


async def test_the_test_event_goes_to_its_endpoint_only(client, backend, receiver):
    secret = await hook(client, receiver, name="first")
    await hook(client, receiver, name="second")
    assert (await client.post("/v1/webhooks/first/test")).status_code == 202
    await run_jobs(backend)
    [event] = receiver.verified(secret)
    assert event["type"] == "webhook.test" and event["data"] == {"webhook": "first"}
    assert await deliveries(client, "second") == []


@pytest.mark.parametrize("url", [
    "http://example.org/hooks",              # http to anything not allowed
    "https://10.1.2.3/hooks", "https://192.168.0.1/", "https://172.16.0.1/",
    "https://169.254.169.254/latest/meta-data/",  # cloud metadata
    "https://[::1]/hooks", "https://[fe80::1]/", "https://[::ffff:127.0.0.1]/",
    "https://localhost/hooks",               # a DNS name resolving to 127.0.0.1
    "https://2130706433/", "https://0177.0.0.1/", "https://0x7f000001/",  # 127.0.0.1 spelt otherwise
    "https://0.0.0.0/", "https://user:pass@example.org/", "https://no-such-host.invalid/", "not a url",
])
async def test_a_url_consentd_will_not_call_is_a_422_and_nothing_is_stored(client, url):
    assert_problem(await client.put("/v1/webhooks/evil", json={"url": url, "events": ["consent.changed"]}), 422)
    assert (await client.get("/v1/webhooks")).json() == {"webhooks": []}


async def test_webhooks_keep_to_the_admin_scope_and_their_tenant(client, token, other_tenant, receiver):
    await hook(client, receiver)
    writer = bearer(token("consents:write", "requests:write"))
    assert_problem(await client.get("/v1/webhooks", headers=writer), 403)
    assert_problem(await client.put("/v1/webhooks/x", json={"url": receiver.url, "events": ["consent.changed"]}, headers=writer), 403)
    theirs = bearer(token("admin", tenant_key=other_tenant))
    assert (await client.get("/v1/webhooks", headers=theirs)).json() == {"webhooks": []}
    for method, path in (("GET", "/v1/webhooks/crm"), ("DELETE", "/v1/webhooks/crm"), ("POST", "/v1/webhooks/crm/rotate-secret"),
                         ("POST", "/v1/webhooks/crm/test"), ("GET", "/v1/webhooks/crm/deliveries")):
        assert_problem(await client.request(method, path, headers=theirs), 404)
    for body in ({"url": receiver.url, "events": []}, {"url": receiver.url, "events": ["consent.exploded"]},
                 {"url": receiver.url}, {"url": receiver.url, "events": ["consent.changed"], "extra": 1}):
        assert_problem(await client.put("/v1/webhooks/other", json=body), 422)
    assert_problem(await client.put("/v1/webhooks/Bad Name", json={"url": receiver.url, "events": ["consent.changed"]}), 422)
    replaced = await client.put("/v1/webhooks/crm", json={"url": receiver.url, "events": ["subject.erased"]})
    assert replaced.status_code == 200 and "secret" not in replaced.json() and replaced.json()["events"] == ["subject.erased"]
    assert (await client.delete("/v1/webhooks/crm")).status_code == 204
    assert_problem(await client.get("/v1/webhooks/crm"), 404)


async def test_a_slow_receiver_never_holds_a_write(client, backend):
    """Delivery runs apart from requests: a write answers while a delivery waits on a receiver that hangs."""
    hanging = Receiver().start()
    release = threading.Event()
    assert hanging.server is not None

    class Slow(hanging.server.RequestHandlerClass):  # type: ignore[name-defined,misc]
        def do_POST(self) -> None:
            release.wait(10)
            super().do_POST()

    hanging.server.RequestHandlerClass = Slow
    try:
        await hook(client, hanging)
        await record(client, {"email": "slow@example.org"}, ("marketing", "email", "granted"))
        delivering = asyncio.create_task(run_jobs(backend))
        await asyncio.sleep(0.2)
        started = asyncio.get_running_loop().time()
        await record(client, {"email": "fast@example.org"}, ("marketing", "email", "granted"))
        assert asyncio.get_running_loop().time() - started < 2
        release.set()
        await delivering
    finally:
        release.set()
        hanging.server.shutdown()


def _parse(moment: str):
    from datetime import datetime

    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


async def _make_due(backend) -> None:
    async with backend.database.transaction() as session:
        await session.execute(sa.text("UPDATE webhook_deliveries SET next_attempt_at = :now WHERE status = 'failed'"),
                              {"now": utcnow() - timedelta(seconds=1)})


async def test_a_new_endpoint_hears_of_what_happens_from_now_on(client, backend, receiver):
    await record(client, {"email": "before@example.org"}, ("marketing", "email", "granted"))
    secret = await hook(client, receiver)
    after = await record(client, {"email": "after@example.org"}, ("marketing", "email", "granted"))
    await run_jobs(backend)
    assert [e["data"]["subject_id"] for e in receiver.verified(secret)] == [after["subject_id"]]


async def test_a_request_due_within_seven_days_is_told_once(client, backend, receiver):
    secret = await hook(client, receiver, events=["request.due_soon"])
    late = await file(client, "objection", details={"to": "direct_marketing"}, received_at=iso(utcnow() - timedelta(days=26)))
    fresh = await file(client, "objection", details={"to": "profiling"})
    for _ in range(2):
        await jobs.requests_job(backend.database, region="GB-ENG")
        await run_jobs(backend)
    events = receiver.verified(secret)
    assert [(e["type"], e["data"]["request_id"], e["data"]["due_at"]) for e in events] == [
        ("request.due_soon", late["request_id"], late["due_at"]),
    ]
    assert fresh["request_id"] not in str(events)


async def test_under_concurrent_writers_every_consent_webhook_is_a_feed_entry_with_its_event_id(client, backend, pg_backend, receiver):
    secret = await hook(client, receiver)
    people = [{"email": f"crowd-{n}@example.org"} for n in range(4)]

    async def write(n: int) -> None:
        status = "granted" if n % 2 else "withdrawn"
        await record(client, people[n % 4], ("marketing", "email", status), ("marketing", "sms", status))

    writers = asyncio.gather(*(write(n) for n in range(40)))
    while not writers.done():  # deliveries run while the writers commit, as in a server
        await jobs.run_once(backend.database, backend.services.sender)
        await asyncio.sleep(0.01)
    await writers
    await run_jobs(backend)
    feed, cursor = [], None
    while True:
        page = (await client.get("/v1/changes", params={"after": cursor} if cursor else {})).json()
        feed += [c for c in page["changes"] if c["kind"] == "consent"]
        if not page["changes"]:
            break
        cursor = page["next_cursor"]
    events = receiver.verified(secret)
    assert len(events) == len(feed) and len({r["headers"]["webhook-id"] for r in receiver.received}) == len(feed)
    assert sorted(e["data"]["event_id"] for e in events) == sorted(c["event_id"] for c in feed)
