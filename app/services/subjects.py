"""Subjects and their identifiers: resolve, create, attach, read."""

import uuid

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, NotFound
from app.models import Subject, SubjectIdentifier
from app.models.common import Identifiers, SubjectRef
from app.models.subjects import IdentifierOut, SubjectOut
from app.services.identifiers import IdentifierKeys, normalise
from app.services.sql import upsert


async def _owner(session: AsyncSession, *, tenant: str, id_hash: str) -> uuid.UUID | None:
    return (
        await session.execute(
            select(SubjectIdentifier.subject_id).where(
                SubjectIdentifier.tenant_id == tenant, SubjectIdentifier.id_hash == id_hash
            )
        )
    ).scalar_one_or_none()


async def find(
    session: AsyncSession, keys: IdentifierKeys, *, tenant: str, ref: SubjectRef, loc: tuple[str, ...] = ("body",)
) -> uuid.UUID | None:
    """The id of the subject `ref` names, or None when the tenant has no such subject."""
    if ref.subject_id is not None:
        found = await session.execute(
            select(Subject.id).where(Subject.tenant_id == tenant, Subject.id == ref.subject_id)
        )
        return found.scalar_one_or_none()
    kind, value = ref.kind_and_value()
    return await _owner(session, tenant=tenant, id_hash=keys.lookup_hash(tenant, kind, value, loc=loc))


async def _claim(
    session: AsyncSession,
    keys: IdentifierKeys,
    *,
    tenant: str,
    subject_id: uuid.UUID,
    kind: str,
    value: str,
    loc: tuple[str, ...],
) -> uuid.UUID:
    """Attach an identifier to `subject_id` unless another subject holds it; return its holder."""
    normalised = normalise(kind, value, region=keys.region, loc=loc)
    id_hash = keys.blind_index(tenant, kind, normalised)
    # ON CONFLICT DO NOTHING waits for a concurrent claim of the same identifier, then yields to it.
    await session.execute(
        upsert(session, SubjectIdentifier.__table__)
        .values(tenant_id=tenant, id_hash=id_hash, subject_id=subject_id, type=kind, value_sealed=keys.seal(normalised))
        .on_conflict_do_nothing(index_elements=["tenant_id", "id_hash"])
    )
    holder = await _owner(session, tenant=tenant, id_hash=id_hash)
    assert holder is not None
    return holder


async def find_or_create(session: AsyncSession, keys: IdentifierKeys, *, tenant: str, ref: SubjectRef) -> uuid.UUID:
    """Resolve the body's `subject`, creating the subject when its identifier is new; 404 for an unknown subject_id."""
    loc = ("body", "subject")
    if ref.subject_id is not None:
        subject_id = await find(session, keys, tenant=tenant, ref=ref, loc=loc)
        if subject_id is None:
            raise NotFound("subject", ref.subject_id)
        return subject_id
    kind, value = ref.kind_and_value()
    existing = await find(session, keys, tenant=tenant, ref=ref, loc=loc)
    if existing is not None:
        return existing
    subject = Subject(tenant_id=tenant)
    session.add(subject)
    await session.flush()
    holder = await _claim(session, keys, tenant=tenant, subject_id=subject.id, kind=kind, value=value, loc=loc)
    if holder != subject.id:
        # A concurrent request created the same person first: use theirs, drop ours (never committed).
        await session.execute(delete(Subject).where(Subject.id == subject.id))
    return holder


async def attach(
    session: AsyncSession, keys: IdentifierKeys, *, tenant: str, subject_id: uuid.UUID, identifiers: Identifiers
) -> None:
    """Attach the body's `identifiers` to a subject; 409 when one of them belongs to another subject."""
    for kind, value in identifiers.items():
        holder = await _claim(
            session, keys, tenant=tenant, subject_id=subject_id, kind=kind, value=value, loc=("body", "identifiers")
        )
        if holder != subject_id:
            raise Conflict(f"that {kind} belongs to another subject", errors=[{"loc": ["identifiers", kind], "msg": "taken"}])


async def get(session: AsyncSession, keys: IdentifierKeys, *, tenant: str, subject_id: uuid.UUID) -> SubjectOut:
    """A subject with its identifiers (unsealed), or 404."""
    subject = (
        await session.execute(select(Subject).where(Subject.tenant_id == tenant, Subject.id == subject_id))
    ).scalar_one_or_none()
    if subject is None:
        raise NotFound("subject", subject_id)
    rows = await session.execute(
        select(SubjectIdentifier.type, SubjectIdentifier.value_sealed)
        .where(SubjectIdentifier.tenant_id == tenant, SubjectIdentifier.subject_id == subject_id)
        .order_by(SubjectIdentifier.type, SubjectIdentifier.created_at)
    )
    identifiers = [IdentifierOut(type=kind, value=keys.unseal(sealed)) for kind, sealed in rows]
    return SubjectOut(subject_id=subject.id, identifiers=identifiers, created_at=subject.created_at, flags=subject.flags)


async def require(session: AsyncSession, *, tenant: str, subject_id: uuid.UUID) -> None:
    """404 unless the tenant has this subject."""
    found = await session.execute(select(Subject.id).where(Subject.tenant_id == tenant, Subject.id == subject_id))
    if found.scalar_one_or_none() is None:
        raise NotFound("subject", subject_id)
