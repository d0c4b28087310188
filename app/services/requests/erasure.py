"""Erasure (Art. 17): the person's identifiers and the personal data in their events' evidence are destroyed, in the
completing transaction; their decisions stay as pseudonymous proof of what was agreed.

What stays: the subject's id with its flag `erased`, each identifier's blind index (a keyed hash, so that a check
by a former identifier answers `erased` and a decision captured before the erasure is refused for good), each
event without its evidence but with the evidence's digest (the hash chain commits to that, so it still verifies:
ledger/chains.py), the consent states, and the requests' logs.

What goes: every sealed identifier value (the subject's, their suppressions', their requests'), every event's
evidence, the details of their rectification requests (identifiers), and the stored answers of idempotent writes
that name them.

The erasure first moves the head of the subject's hash chain (`erased_at`): its row is the lock every writer of the
subject takes, so a consent written while the erasure runs either committed before it (and is erased with the rest)
or waited and is refused after it (chains.ERASED).

Under a legal hold (holds.py), the erasure completes in part: every decision that rests on consent or interest is
withdrawn and the person's identifiers are suppressed on every channel; the identifiers and evidence stay until the
last hold is released (store.release_hold), when `erase` runs by itself.
"""

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ConsentEvent, IdempotencyRecord, LedgerChain, SubjectIdentifier, Suppression
from app.models.base import table_of, utcnow
from app.models.requests import DataRequest
from app.services import subjects
from app.services.kit import in_slices, is_postgres, raw_connection, upsert
from app.services.ledger import evidence_digest

_EVENTS, _CHAINS, _IDS = table_of(ConsentEvent), table_of(LedgerChain), table_of(SubjectIdentifier)
_SUPPRESSIONS, _REQUESTS, _ANSWERS = table_of(Suppression), table_of(DataRequest), table_of(IdempotencyRecord)
# Evidence digested and cleared this many events per statement.
_BATCH = 5_000
PG_ERASE = (
    "UPDATE consent_events e SET evidence = NULL, evidence_sha256 = u.digest, evidence_erased_at = $3"
    " FROM unnest($1::bigint[], $2::text[]) AS u(seq, digest) WHERE e.seq = u.seq"
)


async def erase(session: AsyncSession, *, tenant: str, subject_id: uuid.UUID) -> dict[str, int]:
    """Erase the subject in the caller's transaction; what was destroyed, counted."""
    now = utcnow()
    # First: the chain's row, which every writer of the subject locks (created when the subject has no event yet).
    statement = upsert(session, _CHAINS).values(subject_id=subject_id, tenant_id=tenant, length=0, erased_at=now)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["subject_id"], set_={"erased_at": sa.func.coalesce(_CHAINS.c.erased_at, statement.excluded.erased_at)}
        )
    )
    events = await _erase_evidence(session, tenant=tenant, subject_id=subject_id, at=now)
    hashes = list((await session.execute(
        sa.update(_IDS).where(_IDS.c.tenant_id == tenant, _IDS.c.subject_id == subject_id)
        .values(value_sealed="", erased_at=sa.func.coalesce(_IDS.c.erased_at, now))
        .returning(_IDS.c.id_hash)
    )).scalars())
    suppressions = 0
    for chunk in in_slices(hashes):
        cleared = await session.execute(
            sa.update(_SUPPRESSIONS)
            .where(_SUPPRESSIONS.c.tenant_id == tenant, _SUPPRESSIONS.c.id_hash.in_(chunk), _SUPPRESSIONS.c.value_sealed != "")
            .values(value_sealed="")
        )
        suppressions += cleared.rowcount  # type: ignore[attr-defined]
    requests = await _forget_in_requests(session, tenant=tenant, subject_id=subject_id, hashes=hashes)
    # A stored answer names the subject (and may carry the evidence or a device id): it goes, so a retry of that
    # write is taken as new, and refused.
    answers = await session.execute(
        sa.delete(_ANSWERS).where(
            _ANSWERS.c.tenant_id == tenant, sa.cast(_ANSWERS.c.response, sa.Text).contains(str(subject_id))
        )
    )
    await subjects.set_flag(session, tenant=tenant, subject_id=subject_id, flag="erased", on=True)
    return {
        "identifiers": len(hashes), "evidence": events, "suppressions": suppressions, "requests": requests,
        "stored_answers": answers.rowcount,  # type: ignore[attr-defined]
    }


async def _erase_evidence(session: AsyncSession, *, tenant: str, subject_id: uuid.UUID, at: datetime) -> int:
    """Replace each of the subject's events' evidence by its digest (the one its hash commits to)."""
    erased = 0
    after = -1
    while True:
        rows = (await session.execute(
            sa.select(_EVENTS.c.seq, _EVENTS.c.evidence)
            .where(
                _EVENTS.c.tenant_id == tenant, _EVENTS.c.subject_id == subject_id, _EVENTS.c.seq > after,
                _EVENTS.c.evidence_erased_at.is_(None), _EVENTS.c.evidence.is_not(None),
            )
            .order_by(_EVENTS.c.seq).limit(_BATCH)
        )).all()
        if not rows:
            return erased
        digests = [(seq, evidence_digest(evidence)) for seq, evidence in rows]
        if is_postgres(session):
            # One statement a batch: an executemany of single-row updates takes twice as long (bench/erasure.py).
            db = await raw_connection(session)
            await db.execute(PG_ERASE, [seq for seq, _ in digests], [digest for _, digest in digests], at)
        else:
            await session.execute(
                sa.update(_EVENTS).where(_EVENTS.c.seq == sa.bindparam("at_seq"))
                .values(evidence=sa.null(), evidence_sha256=sa.bindparam("digest"), evidence_erased_at=at),
                [{"at_seq": seq, "digest": digest} for seq, digest in digests],
            )
        erased += len(rows)
        after = rows[-1][0]


async def _forget_in_requests(session: AsyncSession, *, tenant: str, subject_id: uuid.UUID, hashes: list[str]) -> int:
    """The person's requests keep their blind index and lose the sealed identifier; a rectification's details
    (identifiers) are reduced to the kinds it named."""
    mine = sa.or_(_REQUESTS.c.subject_id == subject_id, _REQUESTS.c.id_hash.in_(hashes)) if hashes else (
        _REQUESTS.c.subject_id == subject_id
    )
    rows = (await session.execute(
        sa.select(_REQUESTS.c.id, _REQUESTS.c.type, _REQUESTS.c.details).where(_REQUESTS.c.tenant_id == tenant, mine)
    )).all()
    for request_id, kind, details in rows:
        values: dict[str, Any] = {"value_sealed": None}
        if kind == "rectification" and details:
            values["details"] = _kinds_only(details)
        await session.execute(sa.update(_REQUESTS).where(_REQUESTS.c.id == request_id).values(**values))
    return len(rows)


def _kinds_only(details: dict[str, Any]) -> dict[str, Any]:
    """A rectification's details without the identifiers' values: which kinds it added and removed."""
    return {
        "add": {kind: None for kind in details.get("add") or {}},
        "remove": [{kind: None for kind in ref} for ref in details.get("remove") or []],
        "erased": True,
    }


async def forget_stranger(session: AsyncSession, *, tenant: str, id_hash: str) -> None:
    """After suppressing the identifier of a person consentd never knew, who asked for erasure: the suppression and
    the person's requests keep its blind index only."""
    await session.execute(
        sa.update(_SUPPRESSIONS).where(_SUPPRESSIONS.c.tenant_id == tenant, _SUPPRESSIONS.c.id_hash == id_hash)
        .values(value_sealed="")
    )
    await session.execute(
        sa.update(_REQUESTS).where(_REQUESTS.c.tenant_id == tenant, _REQUESTS.c.id_hash == id_hash).values(value_sealed=None)
    )
