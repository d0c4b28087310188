"""The two halves of a consent write agree: the asyncpg half (ledger/pg_write.py) stores exactly the rows the
session's half (consents.record_in) stores for the same records, chains that verify, and nothing is lost or
forked when writers race for one subject or for one new person."""

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from app.models.consents import ConsentRecordIn
from app.services.audit import verification
from app.services.ledger import consents, events, pg_write
from tests.conftest import make_tenant

BASE = datetime(2026, 11, 1, tzinfo=UTC)


def records(subject_id_of: dict[str, str]) -> list[dict]:
    """A run of records: new people by each kind of identifier, known ones by id and by identifier, several
    decisions (one key twice), a late-arriving older decision, evidence and policy versions."""
    return [
        {"subject": {"email": "Ann@Example.com"}, "decisions": [{"purpose": "marketing", "channel": "email", "status": "granted"}],
         "source": "web", "evidence": {"form": "signup", "ip": "192.0.2.1"}, "policy_version": "2026-01"},
        {"subject": {"phone": "+44 20 7946 0018"}, "decisions": [
            {"purpose": "marketing", "channel": "sms", "status": "granted"},
            {"purpose": "profiling", "status": "withdrawn"},
            {"purpose": "marketing", "channel": "sms", "status": "withdrawn"}], "source": "shop"},
        {"subject": {"external_id": "CRM-1"}, "decisions": [{"purpose": "order_updates", "channel": "email", "status": "granted"}],
         "source": "crm", "captured_at": (BASE - timedelta(days=3)).isoformat(), "collection_point": "https://shop.example/a"},
        {"subject": {"email": "ann@example.com"}, "decisions": [{"purpose": "marketing", "channel": "email", "status": "withdrawn"}],
         "source": "web"},
        {"subject": {"email": "ann@example.com"}, "decisions": [{"purpose": "marketing", "channel": "email", "status": "granted"}],
         "source": "late", "captured_at": (BASE - timedelta(days=30)).isoformat()},
        {"subject": {"subject_id": "@CRM-1"}, "decisions": [{"purpose": "marketing", "channel": "post", "status": "granted"}],
         "source": "crm"},
    ]


async def write_all(backend, tenant: str, *, fast: bool) -> None:
    database, keys = backend.database, backend.services.identifier_keys
    cache = backend.services.rule_cache
    ids: dict[str, str] = {}
    for raw in records(ids):
        if raw["subject"].get("subject_id", "").startswith("@"):
            raw = {**raw, "subject": {"subject_id": ids[raw["subject"]["subject_id"][1:]]}}
        body = ConsentRecordIn.model_validate(raw)
        if fast:
            outcome = await consents.record(database, keys, cache, tenant=tenant, actor="t", body=body)
        else:
            async with database.transaction() as session:
                outcome = await consents.record_in(session, keys, tenant=tenant, actor="t", body=body)
        assert outcome.status_code == 201
        if "external_id" in raw["subject"]:
            ids[raw["subject"]["external_id"]] = outcome.body["subject_id"]


async def stored(backend, tenant: str) -> dict:
    """Every row the writes left, with ids and moments replaced by their order of appearance."""
    async with backend.database.reading() as connection:
        async def rows(sql: str) -> list[dict]:
            return [dict(r) for r in (await connection.execute(sa.text(sql), {"t": tenant})).mappings()]

        events = await rows("SELECT * FROM consent_events WHERE tenant_id = :t ORDER BY seq")
        states = await rows("SELECT * FROM consent_state WHERE tenant_id = :t ORDER BY subject_id, purpose, channel")
        changes = await rows("SELECT * FROM consent_changes WHERE tenant_id = :t ORDER BY seq")
        chains = await rows("SELECT * FROM ledger_chains WHERE tenant_id = :t")
        identifiers = await rows("SELECT type, subject_id FROM subject_identifiers WHERE tenant_id = :t ORDER BY type")
        subjects = await rows("SELECT id, flags, merged_into FROM subjects WHERE tenant_id = :t")
    names: dict = {}

    def name(value):
        return names.setdefault(value, len(names))

    for e in events:
        name(e["subject_id"]), name(e["event_id"])
    event_view = [
        (name(e["subject_id"]), name(e["event_id"]), e["purpose"], e["purpose_version"], e["channel"], e["status"],
         e["source"], e["method"], e["policy_version"], e["collection_point"], e["actor"], e["evidence"],
         e["chain_index"], None if e["prev_event_id"] is None else name(e["prev_event_id"]),
         e["captured_at"] == e["recorded_at"])
        for e in events
    ]
    seq_rank = {e["seq"]: i for i, e in enumerate(events)}
    state_view = sorted(
        (name(s["subject_id"]), s["purpose"], s["channel"], s["status"], name(s["event_id"]), seq_rank[s["event_seq"]],
         s["purpose_version"], s["policy_version"])
        for s in states
    )
    change_view = [
        (c["kind"], name(c["subject_id"]), c["purpose"], c["channel"], c["status"], name(c["event_id"]),
         c["purpose_version"], c["expires_at"] is None)
        for c in changes
    ]
    chain_view = sorted((name(c["subject_id"]), c["length"], name(c["head_event_id"])) for c in chains)
    return {"events": event_view, "states": state_view, "changes": change_view, "chains": chain_view,
            "identifiers": sorted((i["type"], name(i["subject_id"])) for i in identifiers), "subjects": len(subjects)}


async def test_both_halves_store_the_same_rows(pg_backend):
    fast, slow = await make_tenant(pg_backend), await make_tenant(pg_backend)
    await write_all(pg_backend, fast, fast=True)
    await write_all(pg_backend, slow, fast=False)
    mine, theirs = await stored(pg_backend, fast), await stored(pg_backend, slow)
    assert mine == theirs
    assert len(mine["events"]) == 8 and mine["subjects"] == 3
    for tenant in (fast, slow):
        report = await verification.verify(pg_backend.database, tenant=tenant, checkpoint=None)
        assert (report.ok, report.checked) == (True, 8), report


class OwnGates:
    """Each writer its own gates, as if each were in another worker: the race is the database's to settle."""

    @contextlib.asynccontextmanager
    async def through(self, key):
        yield


@pytest.mark.parametrize("workers", ["one worker", "one worker each"])
async def test_racing_writers_of_one_subject_all_land_on_one_chain(pg_backend, workers, monkeypatch):
    if workers == "one worker each":
        monkeypatch.setattr(pg_write, "WRITERS", OwnGates())
    tenant = await make_tenant(pg_backend)
    database, keys, cache = pg_backend.database, pg_backend.services.identifier_keys, pg_backend.services.rule_cache

    async def send(n: int) -> dict:
        body = ConsentRecordIn.model_validate({
            "subject": {"email": "hot@example.com"}, "source": "race",
            "decisions": [{"purpose": "marketing", "channel": "email", "status": "granted" if n % 2 else "withdrawn"}],
        })
        return (await consents.record(database, keys, cache, tenant=tenant, actor="t", body=body)).body

    answers = await asyncio.gather(*(send(n) for n in range(40)))
    assert len({a["subject_id"] for a in answers}) == 1  # the first ones raced to create the person: one won
    view = await stored(pg_backend, tenant)
    assert view["subjects"] == 1 and len(view["events"]) == 40 and view["chains"][0][1] == 40
    assert [e[12] for e in view["events"]] == list(range(1, 41))  # chain order is ledger order
    newest = max(answers, key=lambda a: a["events"][0]["recorded_at"])
    assert view["states"][0][3] == newest["events"][0]["status"]
    report = await verification.verify(database, tenant=tenant, checkpoint=None)
    assert (report.ok, report.checked) == (True, 40), report


async def test_a_head_moved_in_between_is_written_under_the_lock(pg_backend):
    """The optimistic write finds the head moved, writes nothing, and the locked write chains after the newcomer."""
    tenant = await make_tenant(pg_backend)
    database, cache = pg_backend.database, pg_backend.services.rule_cache
    keys = pg_backend.services.identifier_keys
    first = ConsentRecordIn.model_validate({"subject": {"external_id": "X"}, "source": "s",
                                            "decisions": [{"purpose": "profiling", "status": "granted"}]})
    subject_id = uuid.UUID((await consents.record(database, keys, cache, tenant=tenant, actor="t", body=first)).body["subject_id"])
    record = events.Record(tenant=tenant, decisions=(events.Decided("profiling", "", "withdrawn"),), captured_at=None,
                           source="s", method="api", policy_version=None, collection_point=None, actor="t", evidence=None)
    async with database.pool.acquire() as connection:
        version, found, head = await pg_write.lookup(connection, tenant=tenant, claim=None, subject_id=subject_id)
        rules = await cache.current(connection, tenant=tenant, version=version)
        await consents.record(database, keys, cache, tenant=tenant, actor="t", body=first)  # someone else, in between
        try:
            await pg_write.write(connection, rules, record, subject_id=found, head=head, claim=None)
        except pg_write.HeadMoved:
            pass
        else:
            raise AssertionError("the stale head was written over")
        await pg_write.write_locked(connection, rules, record, subject_id=subject_id)
    view = await stored(pg_backend, tenant)
    assert [e[12] for e in view["events"]] == [1, 2, 3] and view["chains"][0][1] == 3
    assert (await verification.verify(database, tenant=tenant, checkpoint=None)).ok
