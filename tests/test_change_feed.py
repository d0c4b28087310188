"""The change feed under real concurrency on PostgreSQL: a follower that always follows next_cursor misses no
change, sees none twice, and ends exactly at the state the database holds, even when a slow transaction
commits a change late, after faster writers committed theirs."""

import asyncio
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import sqlalchemy as sa

from app.models.consents import NO_CHANNEL
from app.services import purposes
from app.services.ledger import consents
from app.services.ledger.events import Draft
from app.services.purposes.rules import api_channel
from tests.support.api import consent_body, iso, record

BASE = datetime(2026, 10, 1, tzinfo=UTC)
KEYS = [("marketing", channel) for channel in ("email", "sms", "phone", "post")] + [("profiling", None)]
WRITERS = 4
REQUESTS_AFTER_SLOW_ONES = 15
HOLD = 1.5  # seconds a slow transaction stays open
DEADLINE = 15.0


def at(minutes: float) -> datetime:
    return BASE + timedelta(minutes=minutes)


async def test_follower_sees_every_change_once_and_ends_at_the_state(pg_backend, client, tenant):
    started = time.monotonic()
    rng = random.Random(20261122)
    sids = []
    for i in range(4):
        recorded = await record(client, {"email": f"feed{i}@example.com"}, ("marketing", "email", "granted"), captured_at=iso(at(0)))
        sids.append(recorded["subject_id"])
    shared, private = sids[:3], sids[3]  # the writers share three people; one slow transaction has the fourth
    versions = {p: (await client.get(f"/v1/purposes/{p}")).json()["version"] for p in ("marketing", "profiling")}
    transport = httpx.ASGITransport(app=pg_backend.app)
    slow_done = asyncio.Event()
    writers_done = asyncio.Event()
    slow: dict[str, dict] = {}

    def event(sid: str, purpose: str, channel: str | None, status: str, captured_at: datetime, actor: str) -> Draft:
        return Draft(
            event_id=uuid.uuid4(), tenant_id=tenant, subject_id=uuid.UUID(sid), purpose=purpose,
            purpose_version=versions[purpose], channel=channel or NO_CHANNEL, status=status, captured_at=captured_at,
            source="test", method="api", policy_version=None, collection_point=None, actor=actor, evidence=None,
        )

    async def meanwhile(sid: str, purpose: str, channel: str, captured_at: datetime) -> str:
        """A request through the app, answered (so committed) while a slow transaction is open."""
        async with httpx.AsyncClient(transport=transport, base_url="http://c", headers=client.headers) as http:
            body = consent_body({"subject_id": sid}, (purpose, channel, "granted"), captured_at=iso(captured_at))
            response = await http.post("/v1/consents", json=body)
        assert response.status_code == 201, response.text
        return response.json()["events"][0]["event_id"]

    async def slow_private() -> None:
        """Writes its change, then stays open while a later change commits: its change commits late, below it."""
        written = event(private, "marketing", "post", "withdrawn", at(70), "slow-private")
        async with pg_backend.database.transaction() as session:
            await consents.append(session, [written], await purposes.rules(session, tenant=tenant))
            # A state of its own (no fast writer uses market_research): always a change.
            overtaking = await meanwhile(shared[1], "market_research", "phone", at(30))
            await asyncio.sleep(HOLD)
        slow["slow-private"] = {"event_id": str(written.event_id), "overtaking": overtaking}

    async def slow_shared() -> None:
        """Takes its transaction id, lets a younger transaction move a state the fast writers share, then moves
        that state again itself: its change must sort after the one it replaces although its id is older."""
        await asyncio.sleep(0.2)
        written = event(shared[0], "marketing", "email", "withdrawn", at(75), "slow-shared")
        async with pg_backend.database.transaction() as session:
            xid = (await session.execute(sa.text("SELECT pg_current_xact_id()::text::bigint"))).scalar_one()
            # at(60): newer than anything the fast writers send before the slow ones are done, so always a change.
            replaced = await meanwhile(shared[0], "marketing", "email", at(60))
            await asyncio.sleep(HOLD / 2)
            # The fast writers on this state now queue behind it.
            await consents.append(session, [written], await purposes.rules(session, tenant=tenant))
            await asyncio.sleep(HOLD / 2)
        slow["slow-shared"] = {"event_id": str(written.event_id), "replaced": replaced, "xid": xid}

    async def slow_writers() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(slow_private())
            group.create_task(slow_shared())
        slow_done.set()

    async def fast_writer(index: int) -> None:
        writer_rng = random.Random(rng.random())
        headers = client.headers
        async with httpx.AsyncClient(transport=transport, base_url="http://c", headers=headers) as http:
            after_slow = 0
            while after_slow < REQUESTS_AFTER_SLOW_ONES:
                after_slow += slow_done.is_set()
                decisions = [
                    (purpose, channel, writer_rng.choice(["granted", "withdrawn"]))
                    for purpose, channel in writer_rng.sample(KEYS, writer_rng.randint(1, 3))
                ]
                sid = writer_rng.choice(shared)
                # Newer than the slow writers' decisions only once they committed, so that theirs always move
                # their states (and are in the feed), and some of the fast ones then move them on.
                minutes = writer_rng.uniform(40, 100) if slow_done.is_set() else writer_rng.uniform(0, 60)
                body = consent_body({"subject_id": sid}, *decisions, captured_at=iso(at(minutes)))
                response = await http.post("/v1/consents", json=body)
                assert response.status_code == 201, response.text
                assert time.monotonic() - started < DEADLINE, "the writers took too long"

    applied: dict[tuple, dict] = {}
    cursors: list[str] = []
    event_ids: list[str] = []
    pages_while_writing = 0

    async def follower() -> None:
        """Follows next_cursor page by page while the writers write, then drains the feed."""
        nonlocal pages_while_writing
        cursor = None
        async with httpx.AsyncClient(transport=transport, base_url="http://c", headers=client.headers) as http:
            while True:
                params = {"limit": 5} | ({"after": cursor} if cursor else {})
                response = await http.get("/v1/changes", params=params)
                assert response.status_code == 200, response.text
                page = response.json()
                for change in page["changes"]:
                    key = (change["subject_id"], change["purpose"], change["channel"])
                    captured = datetime.fromisoformat(change["captured_at"])
                    if key in applied:  # in feed order, a state only moves forward
                        assert captured >= datetime.fromisoformat(applied[key]["captured_at"]), (applied[key], change)
                    applied[key] = change
                    cursors.append(change["cursor"])
                    event_ids.append(change["event_id"])
                cursor = page["next_cursor"]
                if page["changes"]:
                    pages_while_writing += not writers_done.is_set()
                    continue
                if writers_done.is_set() and len(event_ids) >= await changes_in_database():
                    return
                assert time.monotonic() - started < DEADLINE, f"the follower is stuck after {len(event_ids)} changes"
                await asyncio.sleep(0.02)

    async def changes_in_database() -> int:
        async with pg_backend.database.reading() as connection:
            return (await connection.execute(
                sa.text("SELECT count(*) FROM consent_changes WHERE tenant_id = :t"), {"t": tenant}
            )).scalar_one()

    async def writers() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(slow_writers())
            for index in range(WRITERS):
                group.create_task(fast_writer(index))
        writers_done.set()

    # A TaskGroup, not gather: when one task fails the others are cancelled, not left running on the session loop.
    async with asyncio.TaskGroup() as group:
        group.create_task(follower())
        group.create_task(writers())
    assert time.monotonic() - started < 20

    async with pg_backend.database.reading() as connection:
        state = (await connection.execute(
            sa.text("SELECT subject_id, purpose, channel, event_id, status FROM consent_state WHERE tenant_id = :t"),
            {"t": tenant},
        )).mappings().all()
        feed = (await connection.execute(
            sa.text("SELECT event_id, position, seq FROM consent_changes WHERE tenant_id = :t"), {"t": tenant}
        )).mappings().all()
        ledger = (await connection.execute(
            sa.text("SELECT subject_id, purpose, channel, event_id, captured_at, seq FROM consent_events WHERE tenant_id = :t"),
            {"t": tenant},
        )).mappings().all()

    # Every change exactly once, none missing.
    assert len(set(cursors)) == len(cursors)
    assert sorted(event_ids) == sorted(str(row["event_id"]) for row in feed)
    assert len(event_ids) < len(ledger)  # late, older decisions were recorded and moved nothing
    # Applied in feed order, the changes end exactly at the state the database holds...
    expected = {(str(r["subject_id"]), r["purpose"], api_channel(r["channel"])): (str(r["event_id"]), r["status"]) for r in state}
    assert {key: (c["event_id"], c["status"]) for key, c in applied.items()} == expected
    # ...which is the ordering rule over the whole ledger: newest captured_at, then latest recorded.
    newest: dict[tuple, dict] = {}
    for row in ledger:
        key = (str(row["subject_id"]), row["purpose"], api_channel(row["channel"]))
        if key not in newest or (row["captured_at"], row["seq"]) > (newest[key]["captured_at"], newest[key]["seq"]):
            newest[key] = row
    assert {key: str(row["event_id"]) for key, row in newest.items()} == {key: value[0] for key, value in expected.items()}

    # The test exercised what it is about. A change committed while slow-private was open, written after its
    # change (a higher seq): a feed read in seq order would have passed slow-private's change by.
    by_event = {str(row["event_id"]): row for row in feed}
    late, overtaking = by_event[slow["slow-private"]["event_id"]], by_event[slow["slow-private"]["overtaking"]]
    assert overtaking["seq"] > late["seq"]
    # slow-shared replaced a change of a younger transaction: its position is not its own (older) id.
    late, replaced = by_event[slow["slow-shared"]["event_id"]], by_event[slow["slow-shared"]["replaced"]]
    assert replaced["position"] > slow["slow-shared"]["xid"]
    assert (late["position"], late["seq"]) > (replaced["position"], replaced["seq"])
    assert pages_while_writing > 0  # the follower read while the writers wrote
