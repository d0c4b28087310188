"""Tamper evidence for consent_state, the table checks read: a row edited, deleted, inserted or moved with raw SQL
behind the service's back changes what a check answers without touching any hash; verification recomputes each
state from the events and names it (`state_mismatch`). On SQLite and PostgreSQL; full, against a signed
checkpoint, and incremental (the subject's chain unchanged since the checkpoint, or moved)."""

import uuid
from collections.abc import Awaitable, Callable

import pytest
import sqlalchemy as sa

from app.services.audit import checkpoints, verification
from tests.conftest import stored_id
from tests.routers.test_device_links import link, visitor_for
from tests.routers.test_public_banner import ALL_ON, new_key, post_choices
from tests.support.api import check, record

JANE, JOHN = {"email": "jane@example.com"}, {"email": "john@example.com"}
MODES = ["full", "signed-checkpoint", "incremental", "incremental-moved"]


async def _ledger(client) -> dict[str, str]:
    """Jane granted then withdrew email marketing and granted sms; John granted email. Event ids by name."""
    ids = {}
    for name, subject, decision, day in [
        ("jane_email_granted", JANE, ("marketing", "email", "granted"), 1),
        ("jane_email_withdrawn", JANE, ("marketing", "email", "withdrawn"), 2),
        ("jane_sms", JANE, ("marketing", "sms", "granted"), 1),
        ("john_email", JOHN, ("marketing", "email", "granted"), 1),
    ]:
        body = await record(client, subject, decision, captured_at=f"2026-11-0{day}T10:00:00Z")
        ids[name], ids[name.split("_")[0]] = body["events"][0]["event_id"], body["subject_id"]
    return ids


async def _sql(backend, statement: str, **params) -> None:
    async with backend.database.engine.begin() as connection:
        await connection.execute(sa.text(statement), {k: stored_id(backend, v) for k, v in params.items()})


async def _verify(backend, tenant, mode: str, taken) -> tuple:
    if mode == "full":
        result = await verification.verify(backend.database, tenant=tenant, checkpoint=None)
    else:
        result = await checkpoints.verify(
            backend.database, backend.services.signer, tenant=tenant,
            saved_jws=taken.jws if mode == "signed-checkpoint" else None, incremental=mode.startswith("incremental"),
        )
    return result, sorted((str(p.event_id), p.problem, str(p.subject_id)) for p in result.problems)


async def _prepared(backend, client, tenant, mode: str):
    """The ledger, a signed checkpoint of it (not in "full" mode), and for "incremental-moved" one more event of
    Jane's after it, so that her chain is read again."""
    ids = await _ledger(client)
    taken = None
    if mode != "full":
        async with backend.database.transaction() as session:
            taken = await checkpoints.create(session, backend.services.signer, tenant=tenant)
    if mode == "incremental-moved":
        await record(client, JANE, ("market_research", "email", "granted"))
    result, problems = await _verify(backend, tenant, mode, taken)
    assert result.ok and problems == []
    return ids, taken


async def test_a_withdrawal_flipped_to_granted_is_named_and_a_check_would_have_allowed(backend, client, tenant):
    ids = await _ledger(client)
    assert (await check(client, JANE, "marketing", "email"))["allowed"] is False
    await _sql(backend, "UPDATE consent_state SET status = 'granted' WHERE event_id = :e", e=ids["jane_email_withdrawn"])
    # Why this matters: the check reads consent_state, so it now allows a send the person refused.
    assert (await check(client, JANE, "marketing", "email"))["allowed"] is True
    result, problems = await _verify(backend, tenant, "full", None)
    assert not result.ok and problems == [(ids["jane_email_withdrawn"], "state_mismatch", ids["jane"])]
    detail = result.problems[0].detail
    assert detail == "the consent state for purpose 'marketing', channel 'email' disagrees with the events in: status"


Tamper = Callable[[object, dict], Awaitable[list[tuple[str, str]]]]


async def _flip(backend, ids) -> list:
    await _sql(backend, "UPDATE consent_state SET status = 'granted' WHERE event_id = :e", e=ids["jane_email_withdrawn"])
    return [("jane_email_withdrawn", "jane")]


async def _move_capture_time(backend, ids) -> list:
    """Jane's sms grant made to look a day newer (the time of her email withdrawal)."""
    await _sql(
        backend,
        "UPDATE consent_state SET captured_at = (SELECT captured_at FROM consent_events WHERE event_id = :other)"
        " WHERE event_id = :e",
        other=ids["jane_email_withdrawn"], e=ids["jane_sms"],
    )
    return [("jane_sms", "jane")]


async def _delete(backend, ids) -> list:
    """A check would then answer no_consent: still not what the events say."""
    await _sql(backend, "DELETE FROM consent_state WHERE event_id = :e", e=ids["jane_email_withdrawn"])
    return [("jane_email_withdrawn", "jane")]


async def _insert(backend, ids) -> list:
    """A state for a key John never decided on (sms), copied from his email state."""
    columns = (
        "tenant_id, subject_id, purpose, status, captured_at, recorded_at, event_seq, event_id, purpose_version, policy_version,"
        " feed_position"
    )
    await _sql(
        backend,
        f"INSERT INTO consent_state (channel, {columns}) SELECT 'sms', {columns} FROM consent_state WHERE event_id = :e",
        e=ids["john_email"],
    )
    return [("john_email", "john")]


async def _repoint_at_older_event(backend, ids) -> list:
    """The state made to copy, consistently, Jane's older grant of the same purpose and channel."""
    copied = ("status", "captured_at", "recorded_at", "event_id")
    assignments = ", ".join(f"{c} = (SELECT {c} FROM consent_events WHERE event_id = :old)" for c in copied)
    await _sql(
        backend,
        f"UPDATE consent_state SET {assignments}, event_seq = (SELECT seq FROM consent_events WHERE event_id = :old)"
        " WHERE event_id = :e",
        old=ids["jane_email_granted"], e=ids["jane_email_withdrawn"],
    )
    return [("jane_email_granted", "jane")]


async def _repoint_at_another_keys_event(backend, ids) -> list:
    await _sql(
        backend, "UPDATE consent_state SET event_id = :other WHERE event_id = :e", other=ids["jane_sms"], e=ids["jane_email_withdrawn"]
    )
    return [("jane_sms", "jane")]


async def _move_to_another_subject(backend, ids) -> list:
    """Jane's sms state moved to John: a state John's events do not give, and one missing from Jane."""
    await _sql(backend, "UPDATE consent_state SET subject_id = :s WHERE event_id = :e", s=ids["john"], e=ids["jane_sms"])
    return [("jane_sms", "jane"), ("jane_sms", "john")]


TAMPERS = {
    "flipped": _flip, "capture-time-moved": _move_capture_time, "deleted": _delete, "inserted": _insert,
    "older-event": _repoint_at_older_event, "another-keys-event": _repoint_at_another_keys_event,
    "moved-subject": _move_to_another_subject,
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tamper", TAMPERS)
async def test_a_tampered_state_is_named(backend, client, tenant, tamper, mode):
    ids, taken = await _prepared(backend, client, tenant, mode)
    expected = await TAMPERS[tamper](backend, ids)
    result, problems = await _verify(backend, tenant, mode, taken)
    assert not result.ok
    assert problems == sorted((ids[event], "state_mismatch", ids[subject]) for event, subject in expected)
    assert all("purpose 'marketing'" in p.detail and str(p.subject_id) not in p.detail for p in result.problems)


async def test_a_state_on_an_event_that_exists_nowhere_is_named(backend, client, tenant):
    """Full verification: a state its subject's events do not give. Incremental, which does not read the chain:
    a state standing on a missing event, as before (`deleted`)."""
    ids = await _ledger(client)
    forged = str(uuid.uuid4())
    await _sql(backend, "UPDATE consent_state SET event_id = :f WHERE event_id = :e", f=forged, e=ids["john_email"])
    assert (await _verify(backend, tenant, "full", None))[1] == [(forged, "state_mismatch", ids["john"])]
    async with backend.database.transaction() as session:
        taken = await checkpoints.create(session, backend.services.signer, tenant=tenant)
    # Incremental does not read John's chain: the state names an event that exists nowhere.
    assert (await _verify(backend, tenant, "incremental", taken))[1] == [(forged, "deleted", "None")]


async def test_a_device_link_verifies_clean_and_both_subjects_keep_their_states(backend, client, tenant):
    """The device's events are copied to the person (new events, the person's states move to them); the device's
    own subject keeps its events and states."""
    key = await new_key(backend, tenant)
    person = await record(client, JANE, ("cookies_analytics", None, "withdrawn"), captured_at="2026-11-01T10:00:00Z")
    async with await visitor_for(backend) as visitor:
        device_id = (await post_choices(visitor, key, None, ALL_ON))["device_id"]  # issued by consentd
    linked = await link(client, person["subject_id"], device_id)
    assert linked["events_merged"] > 0
    for subject in (person["subject_id"], linked["merged_subject_id"]):
        async with backend.database.engine.begin() as connection:
            states = (await connection.execute(sa.text("SELECT count(*) FROM consent_state WHERE subject_id = :s"),
                                               {"s": stored_id(backend, subject)})).scalar()
        assert states > 0
    result, problems = await _verify(backend, tenant, "full", None)
    assert result.ok and problems == [] and result.chains == 2
