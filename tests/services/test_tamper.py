"""Tamper evidence: rows changed, deleted, inserted and reordered with raw SQL behind the service's back, on
SQLite and PostgreSQL; verification names the exact event and the kind of tampering."""

import uuid

import pytest
import sqlalchemy as sa

from app.services.audit import verification
from tests.conftest import stored_id
from tests.support.api import record

JANE, JOHN = {"email": "jane@example.com"}, {"email": "john@example.com"}


async def _ledger(client) -> dict[str, list[str]]:
    """Two subjects with four and two events; the event ids of each, in recording order."""
    events: dict[str, list[str]] = {"jane": [], "john": []}
    for n, status in enumerate(("granted", "withdrawn", "granted", "withdrawn")):
        body = await record(client, JANE, ("marketing", "email", status), captured_at=f"2026-11-0{n + 1}T10:00:00Z",
                            evidence={"form": "signup", "step": n})
        events["jane"] += [e["event_id"] for e in body["events"]]
    body = await record(client, JOHN, ("marketing", "email", "granted"), ("marketing", "sms", "withdrawn"))
    events["john"] += [e["event_id"] for e in body["events"]]
    return events




async def _sql(backend, statement: str, **params) -> None:
    async with backend.database.engine.begin() as connection:
        await connection.execute(sa.text(statement), params)


async def _verify(backend, tenant):
    result = await verification.verify(backend.database, tenant=tenant, checkpoint=None)
    return result, sorted((str(p.event_id), p.problem) for p in result.problems)


async def test_an_untouched_ledger_verifies(backend, client, tenant):
    await _ledger(client)
    result, problems = await _verify(backend, tenant)
    assert problems == [] and result.ok
    assert (result.checked, result.chains) == (6, 2)


@pytest.mark.parametrize("column, value", [("status", "granted"), ("policy_version", "2099-01"), ("actor", "mallory")])
async def test_a_changed_event_is_named(backend, client, tenant, column, value):
    events = await _ledger(client)
    target = events["jane"][1]
    await _sql(backend, f"UPDATE consent_events SET {column} = :v WHERE event_id = :e", v=value, e=stored_id(backend, target))
    result, problems = await _verify(backend, tenant)
    assert problems == [(target, "changed")] and not result.ok


async def test_changed_evidence_is_named(backend, client, tenant):
    events = await _ledger(client)
    target = events["jane"][2]
    await _sql(backend, "UPDATE consent_events SET evidence = :v WHERE event_id = :e", v='{"form": "forged"}', e=stored_id(backend, target))
    assert (await _verify(backend, tenant))[1] == [(target, "changed")]


@pytest.mark.parametrize("position", [0, 2, 3], ids=["first", "middle", "last"])
async def test_a_deleted_event_is_named(backend, client, tenant, position):
    events = await _ledger(client)
    target = events["jane"][position]
    await _sql(backend, "DELETE FROM consent_events WHERE event_id = :e", e=stored_id(backend, target))
    assert (await _verify(backend, tenant))[1] == [(target, "deleted")]


async def test_adjacent_deleted_events_are_named(backend, client, tenant):
    """Two neighbours deleted: the later is named by its successor, the earlier only by its position."""
    events = await _ledger(client)
    for target in events["jane"][1:3]:
        await _sql(backend, "DELETE FROM consent_events WHERE event_id = :e", e=stored_id(backend, target))
    result, problems = await _verify(backend, tenant)
    assert problems == sorted([(events["jane"][2], "deleted"), ("None", "deleted")])
    assert "event 2 " in next(p.detail for p in result.problems if p.event_id is None)


async def test_a_missing_head_is_reported(backend, client, tenant):
    events = await _ledger(client)
    await _sql(backend, "DELETE FROM consent_events WHERE event_id = :e", e=stored_id(backend, events["jane"][3]))
    subject = (await client.post("/v1/subjects/lookup", json=JANE)).json()["subject_id"]
    await _sql(backend, "DELETE FROM ledger_chains WHERE subject_id = :s", s=stored_id(backend, subject))
    # The head is gone, but the consent state still stands on the deleted event.
    assert (await _verify(backend, tenant))[1] == sorted([(events["jane"][2], "rewritten"), (events["jane"][3], "deleted")])


async def test_an_event_moved_far_in_the_ledger_is_named_alone(backend, client, tenant):
    events = await _ledger(client)
    await _sql(backend, "UPDATE consent_events SET seq = 900000000 WHERE event_id = :e", e=stored_id(backend, events["jane"][0]))
    assert (await _verify(backend, tenant))[1] == [(events["jane"][0], "reordered")]


_EVENT_FIELDS = (
    "tenant_id, subject_id, purpose, purpose_version, channel, status, captured_at, recorded_at, source, method, "
    "policy_version, collection_point, actor"
)


@pytest.mark.parametrize(
    "columns, source",
    [(_EVENT_FIELDS + ", evidence, chain_index, prev_event_id, prev_hash, hash", ("jane", 1)), (_EVENT_FIELDS, ("john", 0))],
    ids=["copy-with-chain-fields", "without-chain-fields"],
)
async def test_an_inserted_row_is_named(backend, client, tenant, columns, source):
    """A copy of a real row under a new event id: with its chain fields too, or with none."""
    events = await _ledger(client)
    forged = str(uuid.uuid4())
    await _sql(
        backend,
        f"INSERT INTO consent_events (event_id, {columns}) SELECT :forged, {columns} FROM consent_events WHERE event_id = :e",
        forged=stored_id(backend, forged), e=stored_id(backend, events[source[0]][source[1]]),
    )
    assert (await _verify(backend, tenant))[1] == [(forged, "inserted")]


async def test_events_reordered_in_the_ledger_are_named(backend, client, tenant):
    """Two events exchange their places in the ledger (seq)."""
    events = await _ledger(client)
    first, second = events["jane"][0], events["jane"][2]
    async with backend.database.engine.begin() as connection:
        seq = {
            e: (
                await connection.execute(sa.text("SELECT seq FROM consent_events WHERE event_id = :e"), {"e": stored_id(backend, e)})
            ).scalar()
            for e in (first, second)
        }
        move = sa.text("UPDATE consent_events SET seq = :to WHERE seq = :at")
        await connection.execute(move, {"to": -1, "at": seq[first]})
        await connection.execute(move, {"to": seq[first], "at": seq[second]})
        await connection.execute(move, {"to": seq[second], "at": -1})
    assert (await _verify(backend, tenant))[1] == sorted([(first, "reordered"), (second, "reordered")])


async def test_events_whose_times_were_exchanged_are_named(backend, client, tenant):
    events = await _ledger(client)
    first, second = events["jane"][1], events["jane"][3]
    async with backend.database.engine.begin() as connection:
        read = sa.text("SELECT captured_at FROM consent_events WHERE event_id = :e")
        at = {e: (await connection.execute(read, {"e": stored_id(backend, e)})).scalar() for e in (first, second)}
        write = sa.text("UPDATE consent_events SET captured_at = :at WHERE event_id = :e")
        await connection.execute(write, {"at": at[second], "e": stored_id(backend, first)})
        await connection.execute(write, {"at": at[first], "e": stored_id(backend, second)})
    assert (await _verify(backend, tenant))[1] == sorted([(first, "reordered"), (second, "reordered")])


async def test_another_tenants_tampering_is_not_reported(backend, client, tenant, other_tenant, token):
    await _ledger(client)
    result, problems = await _verify(backend, other_tenant)
    assert problems == [] and result.checked == 0


async def test_problems_past_the_cap_are_counted_not_listed(backend, client, tenant, monkeypatch):
    events = await _ledger(client)
    for target in events["john"]:
        await _sql(backend, "UPDATE consent_events SET actor = 'x' WHERE event_id = :e", e=stored_id(backend, target))
    monkeypatch.setattr(verification, "MAX_PROBLEMS", 1)
    result, problems = await _verify(backend, tenant)
    assert (len(problems), result.problems_total, result.ok) == (1, 2, False)
