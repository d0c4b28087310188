"""Subjects and their identifiers: resolve, create, attach, read."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Conflict, NotFound
from app.models import Subject, SubjectIdentifier
from app.models.base import new_id, table_of, utcnow
from app.models.common import Identifiers, SubjectRef
from app.models.subjects import IdentifierOut, SubjectOut
from app.services import changes
from app.services.kit import in_slices, is_postgres, upsert
from app.services.subjects import bulk as pg_bulk
from app.services.subjects.identifiers import IdentifierKeys, normalise

DEVICE = "device_id"


async def _holding(
    session: AsyncSession, *, tenant: str, id_hash: str, lock: bool = False
) -> tuple[uuid.UUID | None, "Erasure | None"]:
    """The subject holding an identifier, and the identifier's erasure if it was erased (one statement). `lock`:
    hold the identifier (FOR SHARE) so that it cannot move to another subject (devices.link) before this
    transaction ends; a move under way is waited for, then seen."""
    table = table_of(SubjectIdentifier)
    query = select(table.c.subject_id, table.c.erased_at, table.c.value_sealed == "").where(
        table.c.tenant_id == tenant, table.c.id_hash == id_hash
    )
    if lock:
        query = query.with_for_update(read=True)
    row = (await session.execute(query)).first()
    if row is None:
        return None, None
    subject_id, erased_at, vacant = row
    return subject_id, None if erased_at is None else Erasure(erased_at, bool(vacant))


async def _owner(session: AsyncSession, *, tenant: str, id_hash: str) -> uuid.UUID | None:
    """The subject holding an identifier."""
    return (await _holding(session, tenant=tenant, id_hash=id_hash))[0]


async def find(
    session: AsyncSession, keys: IdentifierKeys, *, tenant: str, ref: SubjectRef, loc: tuple[str, ...] = ("body",)
) -> uuid.UUID | None:
    """The id of the subject `ref` names, or None when the tenant has no such subject."""
    if ref.subject_id is not None:
        found = await session.execute(
            select(col(Subject.id)).where(col(Subject.tenant_id) == tenant, col(Subject.id) == ref.subject_id)
        )
        return found.scalar_one_or_none()
    kind, value = ref.kind_and_value()
    return await _owner(session, tenant=tenant, id_hash=keys.lookup_hash(tenant, kind, value, loc=loc))


class _Claim(NamedTuple):
    kind: str
    normal: str
    id_hash: str
    loc: tuple[str | int, ...]
    # The encrypted value, when sealed ahead (imports seal in their worker processes).
    sealed: str | None = None


def _claim_for(
    keys: IdentifierKeys, tenant: str, kind: str, value: str, loc: tuple[str | int, ...], *, seal: bool = False
) -> _Claim:
    """`seal`: with the value sealed ahead."""
    normal = normalise(kind, value, region=keys.region, loc=loc)
    return _Claim(kind, normal, keys.blind_index(tenant, kind, normal), (*loc, kind), keys.seal(normal) if seal else None)


async def _claim_all(
    session: AsyncSession, keys: IdentifierKeys, *, tenant: str, subject_id: uuid.UUID, claims: list[_Claim]
) -> dict[str, uuid.UUID]:
    """Attach each identifier to `subject_id` unless another subject holds it; the holder of each, by id_hash.

    Claimed in blind-index order: two requests that name the same identifiers in another order queue
    behind each other instead of deadlocking. ON CONFLICT DO NOTHING waits for a concurrent claim of the
    same identifier, then yields to it.
    """
    table = table_of(SubjectIdentifier)
    for claim in sorted(claims, key=lambda c: c.id_hash):
        await session.execute(
            upsert(session, table)
            .values(tenant_id=tenant, id_hash=claim.id_hash, subject_id=subject_id, type=claim.kind,
                    value_sealed=keys.seal(claim.normal))
            .on_conflict_do_nothing(index_elements=["tenant_id", "id_hash"])
        )
    return await _holders(session, tenant=tenant, hashes=[c.id_hash for c in claims])


async def resolve(
    session: AsyncSession,
    keys: IdentifierKeys,
    *,
    tenant: str,
    ref: SubjectRef,
    identifiers: Identifiers | None,
    captured_at: datetime | None = None,
) -> uuid.UUID:
    """The body's `subject`, created when its identifier is new, with the body's `identifiers` attached.

    404 for an unknown subject_id; 409 when one of `identifiers` belongs to another subject, or when an identifier
    was erased after `captured_at` (None: now), the moment of the decision to record: it can never count. An
    identifier erased before it is the person signing up again: it moves to a new subject.
    """
    extra = [_claim_for(keys, tenant, kind, value, ("body", "identifiers")) for kind, value in (identifiers or Identifiers()).items()]
    if ref.subject_id is not None:
        subject_id = await find(session, keys, tenant=tenant, ref=ref, loc=("body", "subject"))
        if subject_id is None:
            raise NotFound("subject", ref.subject_id)
        own = None
    else:
        own = _claim_for(keys, tenant, *ref.kind_and_value(), ("body", "subject"))
        # Only devices move between subjects (devices.link): writing for one holds it where it is.
        subject_id, own_erasure = await _holding(session, tenant=tenant, id_hash=own.id_hash, lock=own.kind == DEVICE)
    # An erased identifier keeps its row: one nobody holds is not one (a new identifier needs no look).
    named = ([own] if own is not None and subject_id is not None else []) + extra
    erased = await _erasures(session, tenant=tenant, hashes=[c.id_hash for c in extra])
    if own is not None and own_erasure is not None:
        erased[own.id_hash] = own_erasure
    moment = captured_at or utcnow()
    for claim in named:
        if claim.id_hash in erased:
            _refuse_older(claim, erased[claim.id_hash].erased_at, moment)
    vacant = [c for c in named if c.id_hash in erased and erased[c.id_hash].vacant]
    if own is not None and own in vacant:
        subject_id = None  # the person signs up again after their erasure: a new subject takes the identifier
    if subject_id is not None:
        if vacant:
            await _take_vacant(session, keys, tenant=tenant, subject_id=subject_id, claims=vacant)
        rest = [c for c in extra if c not in vacant]
        holders = await _claim_all(session, keys, tenant=tenant, subject_id=subject_id, claims=rest) if rest else {}
        holders.update({c.id_hash: subject_id for c in vacant})
    else:
        assert own is not None  # no subject yet: the ref names it by an identifier
        subject = Subject(tenant_id=tenant)
        session.add(subject)
        await session.flush()
        if vacant:
            await _take_vacant(session, keys, tenant=tenant, subject_id=subject.id, claims=vacant)
        rest = [c for c in [own, *extra] if c not in vacant]
        holders = await _claim_all(session, keys, tenant=tenant, subject_id=subject.id, claims=rest) if rest else {}
        holders.update({c.id_hash: subject.id for c in vacant})
        subject_id = holders[own.id_hash]
        if subject_id != subject.id:
            # A concurrent request created the same person first: move what we claimed to theirs, drop ours
            # (never committed, so nobody else has seen it).
            await session.execute(
                update(SubjectIdentifier).where(col(SubjectIdentifier.subject_id) == subject.id).values(subject_id=subject_id)
            )
            await session.execute(delete(Subject).where(col(Subject.id) == subject.id))
            holders = {h: subject_id if holder == subject.id else holder for h, holder in holders.items()}
    for claim in extra:
        if holders[claim.id_hash] != subject_id:
            raise Conflict(f"that {claim.kind} belongs to another subject", errors=[{"loc": list(claim.loc), "msg": "taken"}])
    return subject_id


class Erasure(NamedTuple):
    """An identifier of an erased person: when, and whether it still points at the erased subject (`vacant`:
    nobody has signed up with it since)."""

    erased_at: datetime
    vacant: bool


async def _erasures(session: AsyncSession, *, tenant: str, hashes: list[str]) -> dict[str, Erasure]:
    """The erased identifiers among these blind indexes."""
    if not hashes:
        return {}
    table = table_of(SubjectIdentifier)
    found: dict[str, Erasure] = {}
    for chunk in in_slices(hashes):
        rows = await session.execute(
            select(table.c.id_hash, table.c.erased_at, table.c.value_sealed == "")
            .where(table.c.tenant_id == tenant, table.c.id_hash.in_(chunk), table.c.erased_at.is_not(None))
        )
        found.update({id_hash: Erasure(erased_at, bool(vacant)) for id_hash, erased_at, vacant in rows})
    return found


def erased_message(kind: str, erased_at: datetime) -> str:
    return (
        f"the person with that {kind} was erased on {erased_at.date().isoformat()} (a data-subject request): a decision "
        "captured before then can never count"
    )


def _refuse_older(claim: _Claim, erased_at: datetime, moment: datetime) -> None:
    if moment <= erased_at:
        raise Conflict(erased_message(claim.kind, erased_at), errors=[{"loc": list(claim.loc), "msg": "erased"}])


async def _take_vacant(
    session: AsyncSession, keys: IdentifierKeys, *, tenant: str, subject_id: uuid.UUID, claims: list[_Claim]
) -> None:
    """Move erased identifiers nobody holds since to `subject_id`, sealed again (`erased_at` stays: a decision from
    before the erasure is still refused). Conflict when a concurrent writer took one first."""
    table = table_of(SubjectIdentifier)
    for claim in sorted(claims, key=lambda c: c.id_hash):
        moved = await session.execute(
            update(table)
            .where(table.c.tenant_id == tenant, table.c.id_hash == claim.id_hash, table.c.value_sealed == "")
            .values(subject_id=subject_id, value_sealed=claim.sealed or keys.seal(claim.normal))
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict("a concurrent request attached one of these identifiers first; retry")


async def lookup(session: AsyncSession, keys: IdentifierKeys, *, tenant: str, ref: SubjectRef) -> SubjectOut:
    """The subject `ref` names, with its identifiers; 404 when the tenant has none."""
    subject_id = await find(session, keys, tenant=tenant, ref=ref)
    if subject_id is None:
        raise NotFound("subject")
    return await get(session, keys, tenant=tenant, subject_id=subject_id)


async def get(session: AsyncSession, keys: IdentifierKeys, *, tenant: str, subject_id: uuid.UUID) -> SubjectOut:
    """A subject with its identifiers (unsealed), or 404."""
    subject = (
        await session.execute(select(Subject).where(col(Subject.tenant_id) == tenant, col(Subject.id) == subject_id))
    ).scalar_one_or_none()
    if subject is None:
        raise NotFound("subject", subject_id)
    identifiers = [
        IdentifierOut(type=kind, value=value)
        for kind, value in await identifiers_of(session, keys, tenant=tenant, subject_id=subject_id)
    ]
    return SubjectOut(
        subject_id=subject.id, identifiers=identifiers, created_at=subject.created_at, flags=subject.flags,
        merged_into=subject.merged_into,
    )


async def identifiers_of(
    session: AsyncSession, keys: IdentifierKeys, *, tenant: str, subject_id: uuid.UUID
) -> list[tuple[str, str]]:
    """The subject's identifiers (kind, value unsealed), by kind then age; erased ones (a blind index only, nothing
    to show) left out."""
    rows = await session.execute(
        select(col(SubjectIdentifier.type), col(SubjectIdentifier.value_sealed))
        .where(col(SubjectIdentifier.tenant_id) == tenant, col(SubjectIdentifier.subject_id) == subject_id)
        .order_by(col(SubjectIdentifier.type), col(SubjectIdentifier.created_at))
    )
    return [(kind, keys.unseal(sealed)) for kind, sealed in rows if sealed]


async def flags_of(session: AsyncSession, *, tenant: str, subject_id: uuid.UUID) -> list[str]:
    """The subject's standing flags (restricted, erased); 404 for an unknown subject."""
    flags = (await session.execute(
        select(col(Subject.flags)).where(col(Subject.tenant_id) == tenant, col(Subject.id) == subject_id)
    )).first()
    if flags is None:
        raise NotFound("subject", subject_id)
    return list(flags[0] or [])


async def detach(
    session: AsyncSession, keys: IdentifierKeys, *, tenant: str, subject_id: uuid.UUID, kind: str, value: str,
    loc: tuple[str | int, ...] = ("body",),
) -> bool:
    """Take an identifier off the subject (a rectification); False when the subject does not hold it."""
    id_hash = keys.lookup_hash(tenant, kind, value, loc=loc)
    removed = await session.execute(
        delete(SubjectIdentifier).where(
            col(SubjectIdentifier.tenant_id) == tenant, col(SubjectIdentifier.id_hash) == id_hash,
            col(SubjectIdentifier.subject_id) == subject_id,
        )
    )
    return bool(removed.rowcount)  # type: ignore[attr-defined]


async def holder(session: AsyncSession, keys: IdentifierKeys, *, tenant: str, kind: str, value: str,
                 loc: tuple[str | int, ...] = ("body",)) -> uuid.UUID | None:
    """The subject holding an identifier, if any (normalised first: InvalidIdentifier for a bad one)."""
    return await _owner(session, tenant=tenant, id_hash=keys.lookup_hash(tenant, kind, value, loc=loc))


async def require(session: AsyncSession, *, tenant: str, subject_id: uuid.UUID) -> None:
    """404 unless the tenant has this subject."""
    found = await session.execute(select(col(Subject.id)).where(col(Subject.tenant_id) == tenant, col(Subject.id) == subject_id))
    if found.scalar_one_or_none() is None:
        raise NotFound("subject", subject_id)


class Naming(NamedTuple):
    """How one record of a bulk write names its subject (by id or by an identifier), with identifiers to attach."""

    subject_id: uuid.UUID | None
    own: _Claim | None
    extra: tuple[_Claim, ...]

    def packed(self) -> tuple:
        """The naming in plain tuples, which pickle in C: a named tuple pickles through Python calls, several
        times slower, and an import sends a million of these back from its check workers."""
        own = None if self.own is None else tuple(self.own)
        return self.subject_id, own, tuple(tuple(claim) for claim in self.extra)

    @classmethod
    def unpacked(cls, packed: tuple) -> "Naming":
        subject_id, own, extra = packed
        return cls(subject_id, None if own is None else _Claim(*own), tuple(_Claim(*claim) for claim in extra))


def naming(
    keys: IdentifierKeys, *, tenant: str, ref: SubjectRef, identifiers: Identifiers | None, loc: tuple[str | int, ...]
) -> Naming:
    """Normalise a record's subject reference and identifiers, and seal them; raises InvalidIdentifier."""

    extra = tuple(
        _claim_for(keys, tenant, kind, value, (*loc, "identifiers"), seal=True)
        for kind, value in (identifiers.items() if identifiers is not None else ())
    )
    if ref.subject_id is not None:
        return Naming(ref.subject_id, None, extra)
    return Naming(None, _claim_for(keys, tenant, *ref.kind_and_value(), (*loc, "subject"), seal=True), extra)


async def _holders(session: AsyncSession, *, tenant: str, hashes: list[str]) -> dict[str, uuid.UUID]:
    if is_postgres(session):
        return await pg_bulk.holders(session, tenant=tenant, hashes=hashes)
    table = table_of(SubjectIdentifier)
    found: dict[str, uuid.UUID] = {}
    for chunk in in_slices(hashes):
        rows = await session.execute(
            select(table.c.id_hash, table.c.subject_id).where(table.c.tenant_id == tenant, table.c.id_hash.in_(chunk))
        )
        found.update(dict(rows.all()))
    return found


@dataclass
class Resolved:
    """What `resolve_many` found: the subject of each record (None where it failed), the failures, and the subjects
    it created (in this transaction: nobody else has seen them yet)."""

    subject_ids: list[uuid.UUID | None]
    errors: list[dict]
    created: set[uuid.UUID]


async def resolve_many(
    session: AsyncSession,
    keys: IdentifierKeys,
    *,
    tenant: str,
    namings: list[Naming],
    captured: Sequence[datetime | None] | None = None,
) -> Resolved:
    """Subjects for many records at once, as if each record were written in turn with `resolve` (`captured`: each
    record's captured_at, None for now).

    The failures are errors with their index (`{"index", "loc", "msg"}`): an unknown or erased subject_id, an
    identifier that belongs to another subject, or one erased after the record's decision was captured.
    A concurrent writer that claims one of these identifiers between our read and our write makes this raise
    Conflict: the caller's transaction rolls back and the request can be retried.
    """
    ids = sorted({n.subject_id for n in namings if n.subject_id is not None}, key=str)
    existing: dict[uuid.UUID, list[str]] = {}
    for chunk in in_slices(ids):  # few: imports name people by identifier, seldom by id
        rows = await session.execute(
            select(col(Subject.id), col(Subject.flags)).where(col(Subject.tenant_id) == tenant, col(Subject.id).in_(chunk))
        )
        existing.update({subject_id: list(flags or []) for subject_id, flags in rows})
    claims = [c for n in namings for c in ((n.own,) if n.own else ()) + n.extra]
    holder = await _holders(session, tenant=tenant, hashes=sorted({c.id_hash for c in claims}))
    # Erased identifiers keep their rows: only held ones can be erased.
    erased = await _erasures(session, tenant=tenant, hashes=sorted(holder)) if holder else {}
    for id_hash, erasure in erased.items():
        if erasure.vacant:
            del holder[id_hash]  # free to take: the person signs up again (a new subject, as `resolve`)
    new_subjects: list[uuid.UUID] = []
    # Made in order and handed out in order: the new subjects' ids ascend as their rows are written (new_id).
    fresh_ids = iter([new_id() for n in namings if n.own is not None and n.own.id_hash not in holder])
    new_claims: dict[str, tuple[_Claim, uuid.UUID]] = {}
    results: list[uuid.UUID | None] = []
    errors: list[dict] = []
    now = utcnow()
    for index, named in enumerate(namings):
        moment = (captured[index] if captured is not None else None) or now
        older = [
            c for c in ((named.own,) if named.own else ()) + named.extra
            if c.id_hash in erased and moment <= erased[c.id_hash].erased_at
        ]
        if older:
            errors += [
                {"index": index, "loc": list(c.loc[-2:]), "msg": erased_message(c.kind, erased[c.id_hash].erased_at)}
                for c in older
            ]
            results.append(None)
            continue
        if named.subject_id is not None:
            flags = existing.get(named.subject_id)
            if flags is None or "erased" in flags:
                msg = "subject not found" if flags is None else "the subject was erased (a data-subject request)"
                errors.append({"index": index, "loc": ["subject", "subject_id"], "msg": msg})
                results.append(None)
                continue
            subject_id = named.subject_id
        else:
            own = named.own
            assert own is not None  # a Naming without a subject_id names its subject by an identifier
            held = holder.get(own.id_hash)
            if held is None:
                held = next(fresh_ids)
                new_subjects.append(held)
                holder[own.id_hash] = held
                new_claims[own.id_hash] = (own, held)
            subject_id = held
        taken = [c for c in named.extra if holder.get(c.id_hash, subject_id) != subject_id]
        if taken:
            errors += [
                {"index": index, "loc": list(c.loc[-2:]), "msg": f"that {c.kind} belongs to another subject"} for c in taken
            ]
            results.append(None)
            continue
        for claim in named.extra:
            if claim.id_hash not in holder:
                holder[claim.id_hash] = subject_id
                new_claims[claim.id_hash] = (claim, subject_id)
        results.append(subject_id)
    if errors:
        return Resolved(results, errors, set())
    taken_back = {h: new_claims.pop(h) for h in [h for h in new_claims if h in erased]}
    await _insert_claims(session, keys, tenant=tenant, subjects=new_subjects, claims=new_claims)
    for claim, subject_id in taken_back.values():
        await _take_vacant(session, keys, tenant=tenant, subject_id=subject_id, claims=[claim])
    return Resolved(results, [], set(new_subjects))


async def _insert_claims(
    session: AsyncSession,
    keys: IdentifierKeys,
    *,
    tenant: str,
    subjects: list[uuid.UUID],
    claims: dict[str, tuple[_Claim, uuid.UUID]],
) -> None:
    """Create the new subjects and attach the new identifiers, in blind-index order; Conflict if beaten to one."""
    now = utcnow()
    table = table_of(SubjectIdentifier)
    ordered = sorted(claims)
    rows = [
        {
            "tenant_id": tenant, "id_hash": id_hash, "subject_id": claims[id_hash][1], "type": claims[id_hash][0].kind,
            "value_sealed": claims[id_hash][0].sealed or keys.seal(claims[id_hash][0].normal), "created_at": now,
        }
        for id_hash in ordered
    ]
    if is_postgres(session):
        if subjects:
            await pg_bulk.insert_subjects(session, tenant=tenant, ids=subjects, created_at=now)
        # Every row inserted: each is ours (the holders' read below only confirms what the count says).
        if rows and await pg_bulk.claim_identifiers(session, tenant=tenant, rows=rows, created_at=now) == len(rows):
            return
    else:
        if subjects:
            await session.execute(
                insert(table_of(Subject)), [{"id": i, "tenant_id": tenant, "flags": [], "created_at": now} for i in subjects]
            )
        if rows:
            await session.execute(upsert(session, table).on_conflict_do_nothing(index_elements=["tenant_id", "id_hash"]), rows)
    holders = await _holders(session, tenant=tenant, hashes=ordered)
    if any(holders.get(id_hash) != claims[id_hash][1] for id_hash in ordered):
        raise Conflict("a concurrent request attached one of these identifiers first; retry")


FLAG_STATUS = {("restricted", True): "restricted", ("restricted", False): "unrestricted", ("erased", True): "erased"}


async def set_flag(session: AsyncSession, *, tenant: str, subject_id: uuid.UUID, flag: str, on: bool) -> bool:
    """Set or clear a standing flag (`restricted`; `erased`, which is never cleared) and put the change in the feed
    (kind `subject`); False when the subject already stood so. 404 for an unknown subject."""
    status = FLAG_STATUS.get((flag, on))
    if status is None:
        raise ValueError(f"the flag {flag!r} cannot be {'set' if on else 'cleared'}")
    table = table_of(Subject)
    row = (
        await session.execute(
            select(table.c.flags, table.c.feed_position)
            .where(table.c.tenant_id == tenant, table.c.id == subject_id)
            .with_for_update()
        )
    ).first()
    if row is None:
        raise NotFound("subject", subject_id)
    flags = list(row.flags or [])
    if (flag in flags) == on:
        return False
    flags = sorted({*flags, flag}) if on else [f for f in flags if f != flag]
    # Held under the row lock taken above: a later change of this subject's flags sorts after this one (changes.py).
    position = (
        sa.text(changes.PG_POSITION.format(after=":previous")).bindparams(previous=row.feed_position)
        if is_postgres(session) else sa.literal(0)
    )
    moved = await session.execute(
        update(table).where(table.c.tenant_id == tenant, table.c.id == subject_id)
        .values(flags=flags, feed_position=position).returning(table.c.feed_position)
    )
    await changes.record(session, [{
        "tenant_id": tenant, "position": moved.scalar_one(), "kind": "subject", "subject_id": subject_id,
        "status": status, "captured_at": utcnow(),
    }])
    return True
