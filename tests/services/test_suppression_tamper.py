"""Suppressions added, changed or removed behind the service's back, with raw SQL on SQLite and PostgreSQL, are
found by verification (`suppression_mismatch`); so is an edited suppression log. The log refuses UPDATE and DELETE."""

import pytest
import sqlalchemy as sa

from app.services.audit import verification
from tests.support.api import check, record

PHONE = {"phone": "07911 123456"}
SQLITE_TRIGGER = (
    "CREATE TRIGGER IF NOT EXISTS suppression_events_no_delete BEFORE DELETE ON suppression_events "
    "BEGIN SELECT RAISE(ABORT, 'suppression_events is append-only'); END"
)


def _unguarded(backend) -> tuple[str, str]:
    """Statements that lift and restore the log's guard against DELETE (what an intruder with DDL rights does)."""
    if backend.name == "postgres":
        return ("ALTER TABLE suppression_events DISABLE TRIGGER suppression_events_append_only",
                "ALTER TABLE suppression_events ENABLE TRIGGER suppression_events_append_only")
    return "DROP TRIGGER IF EXISTS suppression_events_no_delete", SQLITE_TRIGGER


async def _suppressed(client) -> None:
    await record(client, PHONE, ("marketing", "phone", "granted"))
    body = {"entries": [PHONE, {"email": "b@example.com"}], "channels": ["phone", "email"], "reason": "tps"}
    assert (await client.put("/v1/suppressions", json=body)).status_code == 200
    removed = await client.post("/v1/suppressions/remove", json={"entries": [{"email": "b@example.com"}], "channels": ["email"]})
    assert removed.status_code == 200


async def _sql(backend, statement: str, **params) -> None:
    async with backend.database.engine.begin() as connection:
        await connection.execute(sa.text(statement), params)


async def _problems(backend, tenant) -> list[str]:
    result = await verification.verify(backend.database, tenant=tenant, checkpoint=None)
    assert result.ok == (result.problems_total == 0)
    return [p.problem for p in result.problems]


async def test_suppressions_made_through_the_api_verify(backend, client, tenant):
    await _suppressed(client)
    assert await _problems(backend, tenant) == []


async def test_a_deleted_suppression_is_found(backend, client, tenant):
    await _suppressed(client)
    await _sql(backend, "DELETE FROM suppressions WHERE tenant_id = :t AND channel = 'phone' AND type = 'phone'", t=tenant)
    # The point of the check: the person on the TPS list would now be called.
    assert (await check(client, PHONE, "marketing", "phone"))["allowed"] is True
    assert await _problems(backend, tenant) == ["suppression_mismatch"]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE suppressions SET reason = 'manual' WHERE tenant_id = :t AND type = 'phone' AND channel = 'phone'",
        "INSERT INTO suppressions (tenant_id, id_hash, channel, type, value_sealed, reason, actor, created_at) "
        "SELECT tenant_id, id_hash, 'sms', type, value_sealed, reason, actor, created_at FROM suppressions "
        "WHERE tenant_id = :t AND type = 'phone' AND channel = 'phone'",
        # Put back the one the API released.
        "INSERT INTO suppressions (tenant_id, id_hash, channel, type, value_sealed, reason, actor, created_at) "
        "SELECT tenant_id, id_hash, 'email', type, value_sealed, reason, actor, created_at FROM suppressions "
        "WHERE tenant_id = :t AND type = 'email' AND channel = 'phone'",
    ],
    ids=["changed", "added", "added-back"],
)
async def test_a_suppression_changed_or_added_is_found(backend, client, tenant, statement):
    await _suppressed(client)
    await _sql(backend, statement, t=tenant)
    assert await _problems(backend, tenant) == ["suppression_mismatch"]


async def test_the_log_refuses_changes_and_a_rewritten_log_is_found(backend, client, tenant):
    await _suppressed(client)
    for statement in ("UPDATE suppression_events SET reason = 'manual' WHERE tenant_id = :t",
                      "DELETE FROM suppression_events WHERE tenant_id = :t"):
        with pytest.raises(sa.exc.DBAPIError):
            await _sql(backend, statement, t=tenant)
    # Someone who could drop the triggers and delete the last entry (the release) is found too.
    disable, enable = _unguarded(backend)
    await _sql(backend, disable)
    try:
        await _sql(backend, "DELETE FROM suppression_events WHERE tenant_id = :t AND action = 'remove'", t=tenant)
        problems = await _problems(backend, tenant)
    finally:
        await _sql(backend, enable)
    assert problems and set(problems) == {"suppression_mismatch"}


async def test_a_log_rewritten_to_match_the_list_is_found_by_a_signed_checkpoint(backend, client, tenant):
    """Take back the release everywhere (list, log and head agree again): only the checkpoint's signature shows it."""
    from app.security import Signer
    from app.services.audit import checkpoints

    await _suppressed(client)
    async with backend.database.transaction() as session:
        taken = await checkpoints.create(session, Signer(backend.settings), tenant=tenant)
    disable, enable = _unguarded(backend)
    await _sql(backend, disable)
    try:
        await _sql(backend, "DELETE FROM suppression_events WHERE tenant_id = :t AND action = 'remove'", t=tenant)
        await _sql(
            backend,
            "UPDATE suppression_chains SET length = length - 1, head_hash = (SELECT hash FROM suppression_events "
            "WHERE tenant_id = :t ORDER BY chain_index DESC LIMIT 1) WHERE tenant_id = :t", t=tenant,
        )
        await _sql(
            backend,
            "INSERT INTO suppressions (tenant_id, id_hash, channel, type, value_sealed, reason, actor, created_at) "
            "SELECT tenant_id, id_hash, 'email', type, value_sealed, reason, actor, created_at FROM suppressions "
            "WHERE tenant_id = :t AND type = 'email' AND channel = 'phone'", t=tenant,
        )
    finally:
        await _sql(backend, enable)
    assert await _problems(backend, tenant) == []  # consistent: without the signature nothing shows
    result = await checkpoints.verify(backend.database, Signer(backend.settings), tenant=tenant, saved_jws=taken.jws)
    assert [p.problem for p in result.problems] == ["suppression_mismatch"]
