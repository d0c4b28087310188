"""Many writers at once on PostgreSQL: nothing lost, state as the ordering rule says, retries stored once."""

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta

import httpx

from tests.support.api import consent_body, iso


async def test_concurrent_writers_on_one_subject(pg_backend, client):
    rng = random.Random(11)
    subject = {"email": "busy@example.com"}
    first = await client.post("/v1/consents", json=consent_body(subject, ("marketing", "email", "granted")))
    sid = first.json()["subject_id"]
    base = datetime(2026, 10, 1, tzinfo=UTC)
    bodies = [
        consent_body(
            {"subject_id": sid},
            ("marketing", rng.choice(["email", "sms", "phone", "post"]), rng.choice(["granted", "withdrawn"])),
            ("profiling", None, rng.choice(["granted", "withdrawn"])),
            captured_at=iso(base + timedelta(minutes=rng.randrange(0, 30))),
        )
        for _ in range(60)
    ]
    # Several connections, each sending many requests at once; the app's pool interleaves their transactions.
    transport = httpx.ASGITransport(app=pg_backend.app)

    async def send(body: dict) -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://c", headers=client.headers) as http:
            return await http.post("/v1/consents", json=body)

    responses = await asyncio.gather(*(send(body) for body in bodies))
    assert [r.status_code for r in responses] == [201] * len(bodies)

    history = (await client.get(f"/v1/subjects/{sid}/history", params={"limit": 1000})).json()
    assert history["next_cursor"] is None
    assert len(history["events"]) == 1 + 2 * len(bodies)  # nothing lost
    expected: dict[tuple, str] = {}
    for event in history["events"]:  # the ordering rule, replayed over the full history
        expected[(event["purpose"], event["channel"])] = event["event_id"]
    state = (await client.get(f"/v1/subjects/{sid}/consents")).json()["consents"]
    assert {(c["purpose"], c["channel"]): c["event_id"] for c in state} == expected
    # The subject's hash chain took every event once, in ledger order: nothing forked, nothing reordered.
    verified = (await client.get("/v1/audit/verify")).json()
    assert (verified["ok"], verified["checked"], verified["problems"]) == (True, 1 + 2 * len(bodies), [])


async def test_concurrent_writers_on_many_subjects_keep_every_chain(pg_backend, client):
    """Imports and single records for overlapping subjects at once: every chain verifies afterwards."""
    subjects = [{"external_id": f"S-{n}"} for n in range(20)]
    transport = httpx.ASGITransport(app=pg_backend.app)
    for subject in subjects:  # known first: racing to create one subject is a 409 of its own (tested above)
        assert (await client.post("/v1/consents", json=consent_body(subject, ("marketing", "post", "granted")))).status_code == 201
    lines = [consent_body(s, ("marketing", "email", status)) for s in subjects for status in ("granted", "withdrawn")]
    ndjson = "\n".join(json.dumps(line) for line in lines)

    async def send(n: int) -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://c", headers=client.headers) as http:
            if n % 3 == 0:
                return await http.post("/v1/consents/import", content=ndjson.replace("email", "sms" if n % 2 else "email"),
                                       headers={"Content-Type": "application/x-ndjson"})
            return await http.post("/v1/consents", json=consent_body(subjects[n % 20], ("profiling", None, "granted")))

    responses = await asyncio.gather(*(send(n) for n in range(30)))
    assert {r.status_code for r in responses} <= {200, 201}, [r.text for r in responses if r.status_code >= 300]
    verified = (await client.get("/v1/audit/verify")).json()
    assert verified["ok"] and verified["chains"] == 20 and verified["problems"] == []


async def test_concurrent_idempotent_retries_store_once(pg_backend, client):
    body = consent_body({"email": "retry@example.com"}, ("marketing", "email", "granted"))
    headers = {"Idempotency-Key": "retry-storm"}
    responses = await asyncio.gather(*(client.post("/v1/consents", json=body, headers=headers) for _ in range(12)))
    assert {r.status_code for r in responses} == {201}
    assert len({r.text for r in responses}) == 1
    sid = responses[0].json()["subject_id"]
    assert len((await client.get(f"/v1/subjects/{sid}/history")).json()["events"]) == 1


async def test_concurrent_purpose_creation_makes_version_one(pg_backend, client):
    body = {"title": "Race", "legal_basis": "consent", "category": "other"}
    responses = await asyncio.gather(*(client.put("/v1/purposes/race", json=body) for _ in range(8)))
    assert {r.status_code for r in responses} == {200}
    assert {r.json()["version"] for r in responses} == {1}
    changed = await asyncio.gather(
        *(client.put("/v1/purposes/race", json=body | {"description": f"v{i}"}) for i in range(5))
    )
    assert sorted(r.json()["version"] for r in changed) == [2, 3, 4, 5, 6]


async def test_decisions_in_opposite_orders_do_not_deadlock(pg_backend, client):
    created = await client.post("/v1/consents", json=consent_body({"email": "order@example.com"}, ("marketing", "email", "granted")))
    sid = created.json()["subject_id"]
    forward = [("marketing", c, "granted") for c in ("email", "sms", "phone", "post")]
    bodies = [consent_body({"subject_id": sid}, *(forward if i % 2 else forward[::-1])) for i in range(40)]
    responses = await asyncio.gather(*(client.post("/v1/consents", json=body) for body in bodies))
    assert [r.status_code for r in responses] == [201] * len(bodies), [r.text for r in responses if r.status_code != 201][:2]


async def test_crossed_identifiers_conflict_instead_of_deadlocking(pg_backend, client):
    """Two requests name X as subject with Y attached, and Y as subject with X attached: one wins, the other is a 409."""
    bodies = []
    for i in range(20):
        x, y = {"email": f"x{i}@example.com"}, {"external_id": f"Y{i}"}
        bodies += [
            consent_body(x, ("marketing", "email", "granted"), identifiers=y),
            consent_body(y, ("marketing", "email", "granted"), identifiers=x),
        ]
    responses = await asyncio.gather(*(client.post("/v1/consents", json=body) for body in bodies))
    assert {r.status_code for r in responses} <= {201, 409}, [r.text for r in responses if r.status_code not in (201, 409)][:2]
    for i in range(20):
        first = (await client.post("/v1/subjects/lookup", json={"email": f"x{i}@example.com"})).json()
        second = (await client.post("/v1/subjects/lookup", json={"external_id": f"Y{i}"})).json()
        assert first["subject_id"] == second["subject_id"]  # both identifiers ended up on one person


async def test_recorded_at_never_runs_backwards_along_a_chain(pg_backend, client):
    subject = {"email": "clock@example.com"}
    sid = (await client.post("/v1/consents", json=consent_body(subject, ("marketing", "email", "granted")))).json()["subject_id"]
    transport = httpx.ASGITransport(app=pg_backend.app)

    async def send(n: int) -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://c", headers=client.headers) as http:
            decision = ("profiling", None, "granted" if n % 2 else "withdrawn")
            return await http.post("/v1/consents", json=consent_body({"subject_id": sid}, decision))

    assert {r.status_code for r in await asyncio.gather(*(send(n) for n in range(40)))} == {201}
    rows = [json.loads(line) for line in (await client.get("/v1/audit/events")).content.splitlines()]
    chain = sorted((r for r in rows if r["subject_id"] == sid), key=lambda r: r["chain_index"])
    assert len(chain) == 41
    assert [r["recorded_at"] for r in chain] == sorted(r["recorded_at"] for r in chain)
    assert [r["seq"] for r in chain] == sorted(r["seq"] for r in chain)
