"""The Alembic migrations build exactly the schema the models describe, on both backends."""

import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import Database
from app.migrations import upgrade
from app.models import ConsentChange, metadata
from app.models.base import UTCDateTime
from app.services.audit import verification
from app.services.requests import erasure
from tests.conftest import settings_for
from tests.support import postgres


async def test_migrated_schema_matches_the_models(backend):
    def diff(connection) -> list:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, metadata)

    async with backend.database.engine.connect() as connection:
        differences = await connection.run_sync(diff)
    assert differences == []


@contextlib.asynccontextmanager
async def old_databases(tmp_path, pg_server, revision: str) -> AsyncIterator[list[str]]:
    """A SQLite database and (when there is a server) a PostgreSQL one at `revision`, dropped afterwards."""
    urls = [f"sqlite+aiosqlite:///{tmp_path / f'at_{revision}.db'}"]
    if pg_server is not None:
        urls.append(await postgres.create_database(pg_server, f"consentd_upgrade_{secrets.token_hex(4)}"))
    try:
        for url in urls:
            await upgrade(url, revision)
        yield urls
    finally:
        for url in urls[1:]:
            await postgres.drop_database(pg_server, make_url(url).database)


async def test_the_feed_starts_with_the_states_that_stood_before_it_existed(tmp_path, pg_server):
    """Upgrading a database that already holds consents gives the change feed one change per standing state."""
    async with old_databases(tmp_path, pg_server, "20261122_0001") as urls:
        for url in urls:
            engine = create_async_engine(url)
            subject, event = uuid.uuid4(), uuid.uuid4()
            at = datetime(2025, 5, 1, tzinfo=UTC)
            async with engine.begin() as connection:
                await connection.execute(
                    sa.text("INSERT INTO tenants (key, name, created_at) VALUES ('old', 'old', :at)"), {"at": at}
                )
                await connection.execute(
                    insert(_OLD_SUBJECTS).values(id=subject, tenant_id="old", flags=[], created_at=at)
                )
                await connection.execute(
                    sa.text(
                        "INSERT INTO consent_state (tenant_id, subject_id, purpose, channel, status, captured_at,"
                        " recorded_at, event_seq, event_id, purpose_version, policy_version)"
                        " VALUES ('old', :subject, 'marketing', 'email', 'granted', :at, :at, 1, :event, 1, NULL)"
                    ),
                    {"subject": _native(url, subject), "at": at, "event": _native(url, event)},
                )
            await upgrade(url)
            async with engine.connect() as connection:
                rows = (await connection.execute(sa.select(ConsentChange.__table__))).mappings().all()
            await engine.dispose()
            assert [(r["tenant_id"], r["subject_id"], r["purpose"], r["channel"], r["status"], r["event_id"]) for r in rows] == [
                ("old", subject, "marketing", "email", "granted", event)
            ], url


async def test_events_recorded_before_the_chains_existed_are_chained_in_ledger_order(tmp_path, pg_server):
    """Upgrading a ledger from before hash chains chains its events, and the result verifies."""
    async with old_databases(tmp_path, pg_server, "20261122_0003") as urls:
        for url in urls:
            engine = create_async_engine(url)
            at = datetime(2025, 5, 1, tzinfo=UTC)
            subjects = [uuid.uuid4(), uuid.uuid4()]
            async with engine.begin() as connection:
                await connection.execute(
                    sa.text("INSERT INTO tenants (key, name, created_at) VALUES ('old', 'old', :at)"), {"at": at}
                )
                for subject in subjects:
                    await connection.execute(
                        insert(_OLD_SUBJECTS).values(id=subject, tenant_id="old", flags=[], created_at=at)
                    )
                for n, subject in enumerate([subjects[0], subjects[1], subjects[0]]):
                    await _old_event(connection, url, event=uuid.uuid4(), subject=subject, at=at, evidence=f'{{"n": {n}}}')
                await _old_states(connection)
            await engine.dispose()
            await upgrade(url)
            database = await Database.open(settings_for(url))
            try:
                result = await verification.verify(database, tenant="old", checkpoint=None)
            finally:
                await database.close()
            assert (result.ok, result.checked, result.chains) == (True, 3, 2), (url, result.problems)


async def _old_event(connection, url: str, *, event: uuid.UUID, subject: uuid.UUID, at: datetime, evidence: str) -> None:
    """A marketing/email grant of tenant `old`, with only the columns every old revision has."""
    await connection.execute(
        sa.text(
            "INSERT INTO consent_events (event_id, tenant_id, subject_id, purpose, purpose_version, channel,"
            " status, captured_at, recorded_at, source, method, actor, evidence)"
            " VALUES (:event, 'old', :subject, 'marketing', 1, 'email', 'granted', :at, :at, 'api', 'api',"
            " 'someone', :evidence)"
        ),
        {"event": _native(url, event), "subject": _native(url, subject), "at": at, "evidence": evidence},
    )


async def _old_states(connection) -> None:
    """The states the service of that time moved along (equal captured_at: the later seq stands), which verification
    compares with the events."""
    await connection.execute(sa.text(
        "INSERT INTO consent_state (tenant_id, subject_id, purpose, channel, status, captured_at, recorded_at,"
        " event_seq, event_id, purpose_version, policy_version, feed_position)"
        " SELECT tenant_id, subject_id, purpose, channel, status, captured_at, recorded_at, seq, event_id,"
        " purpose_version, policy_version, 0 FROM consent_events e"
        " WHERE seq = (SELECT max(seq) FROM consent_events l WHERE l.subject_id = e.subject_id)"
    ))


# The subjects table as the old revisions have it (the live model has grown columns since).
_OLD_SUBJECTS = sa.table(
    "subjects", sa.column("id", sa.Uuid()), sa.column("tenant_id", sa.String()), sa.column("flags", sa.JSON()),
    sa.column("created_at", UTCDateTime()),
)


def _native(url: str, value: uuid.UUID) -> uuid.UUID | str:
    """A UUID as a raw statement binds it (SQLite stores 32 hex digits)."""
    return value if url.startswith("postgresql") else value.hex


async def test_a_row_about_a_subject_must_be_filed_under_the_subjects_tenant(backend):
    """(tenant_id, subject_id) references the subject with its tenant: a row of another tenant naming it is refused,
    on both backends, and the same row under the subject's own tenant is stored."""
    from app.models import ConsentEvent, ConsentState, LedgerChain, Subject, SubjectIdentifier, Tenant

    at = datetime(2026, 1, 1, tzinfo=UTC)
    owner, other = f"own-{secrets.token_hex(4)}", f"oth-{secrets.token_hex(4)}"
    subject = uuid.uuid4()
    event = {
        "event_id": uuid.uuid4(), "subject_id": subject, "purpose": "marketing", "purpose_version": 1,
        "channel": "email", "status": "granted", "captured_at": at, "recorded_at": at, "source": "api", "actor": "t",
    }
    rows = {
        ConsentEvent: event,
        ConsentState: {
            "subject_id": subject, "purpose": "marketing", "channel": "email", "status": "granted", "captured_at": at,
            "recorded_at": at, "event_seq": 1, "event_id": event["event_id"], "purpose_version": 1,
        },
        ConsentChange: {
            "position": 0, "subject_id": subject, "purpose": "marketing", "channel": "email", "status": "granted",
            "captured_at": at, "event_id": event["event_id"],
        },
        LedgerChain: {"subject_id": subject, "length": 0},
        SubjectIdentifier: {"id_hash": secrets.token_hex(16), "subject_id": subject, "type": "email", "value_sealed": "x"},
    }
    async with backend.database.engine.begin() as connection:
        for key in (owner, other):
            await connection.execute(insert(Tenant.__table__).values(key=key, name=key, created_at=at))
        await connection.execute(insert(Subject.__table__).values(id=subject, tenant_id=owner, flags=[], created_at=at))
    for model, row in rows.items():
        with pytest.raises(sa.exc.IntegrityError):
            async with backend.database.engine.begin() as connection:
                await connection.execute(insert(model.__table__).values(tenant_id=other, **row))
        async with backend.database.engine.begin() as connection:
            await connection.execute(insert(model.__table__).values(tenant_id=owner, **row))
            stored = await connection.scalar(
                sa.select(sa.func.count()).select_from(model.__table__).where(model.__table__.c.subject_id == subject)
            )
        assert stored == 1, model.__tablename__


async def test_v1_chains_are_rehashed_to_commit_to_evidence_by_digest_and_a_change_stays_visible(tmp_path, pg_server):
    """Upgrading a ledger of consentd-event-v1 chains re-hashes them as v2 (which verify, and survive an erasure of
    their evidence); an event altered behind the service's back before the upgrade is still reported changed."""
    async with old_databases(tmp_path, pg_server, "20261122_0003") as urls:
        for url in urls:
            engine = create_async_engine(url)
            at = datetime(2025, 5, 1, tzinfo=UTC)
            honest, tampered = uuid.uuid4(), uuid.uuid4()
            events = {}
            async with engine.begin() as connection:
                await connection.execute(sa.text("INSERT INTO tenants (key, name, created_at) VALUES ('old', 'old', :at)"), {"at": at})
                for subject in (honest, tampered):
                    await connection.execute(insert(_OLD_SUBJECTS).values(id=subject, tenant_id="old", flags=[], created_at=at))
                    for n in range(3):
                        events[subject, n] = uuid.uuid4()
                        await _old_event(connection, url, event=events[subject, n], subject=subject, at=at,
                                         evidence=f'{{"n": {n}, "email": "someone@example.org"}}')
                await _old_states(connection)
            await upgrade(url, "20261204_0008")  # chained as consentd-event-v1
            async with engine.begin() as connection:
                await connection.execute(
                    sa.text("UPDATE consent_events SET evidence = :evidence WHERE event_id = :event"),
                    {"evidence": '{"n": 1, "email": "forged@example.org"}', "event": _native(url, events[tampered, 1])},
                )
                v1 = dict((await connection.execute(sa.text("SELECT event_id, hash FROM consent_events"))).all())
            await upgrade(url)
            async with engine.connect() as connection:
                v2 = dict((await connection.execute(sa.text("SELECT event_id, hash FROM consent_events"))).all())
            await engine.dispose()
            changed = {e for e in v1 if v1[e] != v2[e]}
            # Every hash moved but the altered event's, which keeps its v1 hash and so still fails.
            assert len(v1) == 6 and len(changed) == 5, url
            database = await Database.open(settings_for(url))
            try:
                result = await verification.verify(database, tenant="old", checkpoint=None)
                assert [(p.problem, str(p.event_id)) for p in result.problems] == [("changed", str(events[tampered, 1]))], url
                # The honest chain survives its evidence being erased (as an erasure does it).
                async with database.transaction() as session:
                    await erasure.erase(session, tenant="old", subject_id=honest)
                result = await verification.verify(database, tenant="old", checkpoint=None)
            finally:
                await database.close()
            # (Erased here without a request, the subject's flag has no log entry behind it: that is reported too.)
            assert (result.checked, result.erased) == (6, 3), url
            assert [(p.problem, p.event_id or p.subject_id) for p in result.problems] == [
                ("changed", events[tampered, 1]), ("state_mismatch", honest),
            ], url


async def test_a_subject_restricted_before_flags_were_logged_verifies_after_the_upgrade(tmp_path, pg_server):
    """Revision 0009 logs the flag of a subject restricted by an earlier version on the request that restricted it."""
    from app.services.audit.request_log import entry_hash

    async with old_databases(tmp_path, pg_server, "20261204_0008") as urls:
        for url in urls:
            engine = create_async_engine(url)
            at = datetime(2026, 12, 1, tzinfo=UTC)
            subject, request = uuid.uuid4(), uuid.uuid4()
            first = entry_hash(tenant="old", request_id=request, chain_index=1, prev_hash="0" * 64, at=at,
                               action="completed", actor="crm", note="restricted (legal_claim)")
            async with engine.begin() as connection:
                await connection.execute(sa.text("INSERT INTO tenants (key, name, created_at) VALUES ('old', 'old', :at)"), {"at": at})
                await connection.execute(insert(_OLD_SUBJECTS).values(id=subject, tenant_id="old", flags=["restricted"], created_at=at))
                await connection.execute(
                    sa.text(
                        "INSERT INTO data_requests (id, tenant_id, type, status, subject_id, received_at, due_sort, paused_days,"
                        " details, log_length, log_head_hash, created_at) VALUES (:id, 'old', 'restriction', 'completed',"
                        " :subject, :at, '2027-01-04', 0, :details, 1, :hash, :at)"
                    ),
                    {"id": _native(url, request), "subject": _native(url, subject), "at": at,
                     "details": '{"grounds": "legal_claim"}', "hash": first},
                )
                await connection.execute(
                    sa.text(
                        "INSERT INTO data_request_log (tenant_id, request_id, chain_index, at, action, actor, note, prev_hash, hash)"
                        " VALUES ('old', :id, 1, :at, 'completed', 'crm', 'restricted (legal_claim)', :genesis, :hash)"
                    ),
                    {"id": _native(url, request), "at": at, "genesis": "0" * 64, "hash": first},
                )
            await engine.dispose()
            await upgrade(url)
            database = await Database.open(settings_for(url))
            try:
                result = await verification.verify(database, tenant="old", checkpoint=None)
            finally:
                await database.close()
            assert (result.ok, result.problems) == (True, []), url
