"""Signed checkpoints: a chain rewritten consistently (every hash recomputed) passes the chain check but not the
checkpoint; the checkpoint's own heads and signature are checked too. On SQLite and PostgreSQL."""

import uuid

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.errors import NotFound
from app.models import ConsentEvent, LedgerChain
from app.security import Signer
from app.services.audit import checkpoints, verification
from app.services.ledger.chains import chain_events
from tests.conftest import settings_for, stored_id
from tests.support.api import record

JANE, JOHN = {"email": "jane@example.com"}, {"email": "john@example.com"}


async def _seed(client) -> list[dict]:
    events = []
    for subject in (JANE, JOHN):
        for status in ("granted", "withdrawn", "granted"):
            events += (await record(client, subject, ("marketing", "email", status)))["events"]
    return events


async def _checkpoint(backend, tenant):
    async with backend.database.transaction() as session:
        return await checkpoints.create(session, backend.services.signer, tenant=tenant)


async def _verify(backend, tenant, saved_jws=None):
    result = await checkpoints.verify(backend.database, backend.services.signer, tenant=tenant, saved_jws=saved_jws)
    return result, [(str(p.event_id) if p.event_id else None, p.problem) for p in result.problems]


async def _rewrite_chain(backend, subject_id: str, event_id: str) -> None:
    """What someone with write access to the database can do: change an event and recompute the whole chain."""
    events, chains = ConsentEvent.__table__, LedgerChain.__table__
    subject = uuid.UUID(subject_id)
    async with backend.database.engine.begin() as connection:
        rows = (await connection.execute(sa.select(events).where(events.c.subject_id == subject))).mappings().all()
        forged = [{**row, "status": "granted" if str(row["event_id"]) == event_id else row["status"]} for row in rows]
        for event in chain_events(forged):
            await connection.execute(
                events.update().where(events.c.seq == event["seq"]).values(
                    status=event["status"], prev_hash=event["prev_hash"], hash=event["hash"]
                )
            )
        await connection.execute(
            chains.update().where(chains.c.subject_id == subject).values(head_hash=event["hash"])
        )


async def test_a_checkpoint_signs_every_head(backend, client, tenant):
    await _seed(client)
    taken = await _checkpoint(backend, tenant)
    assert (taken.chains, taken.events, taken.previous_root) == (2, 6, None)
    payload = backend.services.signer.verify(taken.jws)
    assert (payload["tenant"], payload["root"], payload["checkpoint_id"]) == (tenant, taken.root, taken.id)
    result, problems = await _verify(backend, tenant)
    assert problems == [] and result.ok and result.checkpoint.id == taken.id
    # Events after a checkpoint verify too, and the next checkpoint names this one's root.
    await record(client, JANE, ("marketing", "sms", "granted"))
    assert (await _verify(backend, tenant))[1] == []
    following = await _checkpoint(backend, tenant)
    assert (following.previous_root, following.events) == (taken.root, 7)


async def test_a_rewritten_chain_passes_the_chain_check_but_not_the_checkpoint(backend, client, tenant):
    events = await _seed(client)
    taken = await _checkpoint(backend, tenant)
    target = events[1]
    await _rewrite_chain(backend, target["subject_id"], target["event_id"])
    # Without the signature there is nothing to tell: that is why checkpoints exist.
    unsigned = await verification.verify(backend.database, tenant=tenant, checkpoint=None)
    assert unsigned.ok
    result, problems = await _verify(backend, tenant)
    assert problems == [(events[2]["event_id"], "rewritten")] and not result.ok
    assert str(result.problems[0].subject_id) == target["subject_id"]
    # The saved copy of the checkpoint says the same.
    assert (await _verify(backend, tenant, saved_jws=taken.jws))[1] == [(events[2]["event_id"], "rewritten")]


async def test_tampered_checkpoint_heads_are_found(backend, client, tenant):
    events = await _seed(client)
    taken = await _checkpoint(backend, tenant)
    await _rewrite_chain(backend, events[0]["subject_id"], events[0]["event_id"])
    # Hiding the rewrite by changing the checkpoint's stored heads too breaks the signed root.
    async with backend.database.engine.begin() as connection:
        head = (await connection.execute(sa.text("SELECT head_hash FROM ledger_chains WHERE subject_id = :s"),
                                         {"s": stored_id(backend, events[0]["subject_id"])})).scalar()
        await connection.execute(
            sa.text("UPDATE audit_checkpoint_heads SET head_hash = :h WHERE checkpoint_id = :c AND head_hash <> :h AND length = 3"),
            {"h": head, "c": taken.id},
        )
    result, problems = await _verify(backend, tenant)
    assert (None, "rewritten") in problems and not result.ok


async def test_a_checkpoint_deleted_from_the_database_is_found_with_the_saved_copy(backend, client, tenant):
    await _seed(client)
    taken = await _checkpoint(backend, tenant)
    async with backend.database.engine.begin() as connection:
        await connection.execute(sa.text("DELETE FROM audit_checkpoint_heads WHERE checkpoint_id = :c"), {"c": taken.id})
        await connection.execute(sa.text("DELETE FROM audit_checkpoints WHERE id = :c"), {"c": taken.id})
    assert (await _verify(backend, tenant, saved_jws=taken.jws))[1] == [(None, "rewritten")]


async def test_a_checkpoint_signed_by_another_key_does_not_verify(backend, client, tenant, tmp_path):
    await _seed(client)
    taken = await _checkpoint(backend, tenant)
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "other.pem").write_bytes(pem)
    stranger = Signer(settings_for(backend.url, signing_key=str(tmp_path / "other.pem")))
    forged = stranger.sign(backend.services.signer.verify(taken.jws), typ=checkpoints.TYP)
    result, problems = await _verify(backend, tenant, saved_jws=forged)
    assert problems[0] == (None, "rewritten") and "signature" in result.problems[0].detail


async def test_another_tenants_checkpoint_is_not_found(backend, client, tenant, other_tenant):
    await _seed(client)
    taken = await _checkpoint(backend, tenant)
    with pytest.raises(NotFound):
        await checkpoints.verify(backend.database, backend.services.signer, tenant=other_tenant, saved_jws=taken.jws)


async def test_incremental_verification_reads_only_the_chains_that_moved(backend, client, tenant):
    events = await _seed(client)
    await _checkpoint(backend, tenant)
    moved = (await record(client, JANE, ("marketing", "sms", "granted")))["events"][0]
    result = await checkpoints.verify(backend.database, backend.services.signer, tenant=tenant, incremental=True)
    assert (result.ok, result.checked, result.chains) == (True, 4, 2)
    # A change to a chain that moved is found; so is a chain rewritten since the checkpoint.
    await _rewrite_chain(backend, moved["subject_id"], events[1]["event_id"])
    result = await checkpoints.verify(backend.database, backend.services.signer, tenant=tenant, incremental=True)
    assert [(str(p.event_id), p.problem) for p in result.problems] == [(events[2]["event_id"], "rewritten")]


async def test_a_whole_chain_deleted_is_found_by_the_checkpoint(backend, client, tenant):
    """Every event of a subject and its head row gone: only the checkpoint remembers the chain."""
    events = await _seed(client)
    await _checkpoint(backend, tenant)
    key = stored_id(backend, events[3]["subject_id"])
    async with backend.database.engine.begin() as connection:
        for table in ("consent_changes", "consent_state", "consent_events", "ledger_chains"):
            await connection.execute(sa.text(f"DELETE FROM {table} WHERE subject_id = :s"), {"s": key})
    assert (await _verify(backend, tenant))[1] == [(events[5]["event_id"], "deleted")]
