"""Linking a browser's device to a known person: the device's cookie history joins the person's."""

import uuid

import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Conflict
from app.models import ConsentEvent, Subject, SubjectIdentifier
from app.models.banners import DeviceLinkOut
from app.models.base import new_id, table_of
from app.services import purposes, subjects
from app.services.kit import upsert
from app.services.ledger import consents
from app.services.ledger.events import Draft
from app.services.subjects import IdentifierKeys, normalise

DEVICE = subjects.DEVICE
LINK = "link"


async def link(
    session: AsyncSession, keys: IdentifierKeys, *, tenant: str, subject_id: uuid.UUID, device_id: str, actor: str
) -> DeviceLinkOut:
    """Attach the device to the person; if the device was a subject of its own, merge its history in.

    The ledger stays append-only: each event of the device's subject is copied to the person (method `link`,
    evidence naming the original), the original stays where it was, and the person's state takes the newest
    decision per purpose by captured_at, as for any late-arriving decision. 409 when the device belongs to
    another person known by something more than a device.
    """
    await subjects.require(session, tenant=tenant, subject_id=subject_id)
    normal = normalise(DEVICE, device_id, region=keys.region, loc=("body",))
    id_hash = keys.blind_index(tenant, DEVICE, normal)
    table = table_of(SubjectIdentifier)
    await session.execute(
        upsert(session, table)
        .values(tenant_id=tenant, id_hash=id_hash, subject_id=subject_id, type=DEVICE, value_sealed=keys.seal(normal))
        .on_conflict_do_nothing(index_elements=["tenant_id", "id_hash"])
    )
    # Held until commit: a banner write for this device waits, then sees it on the person (subjects._owner).
    holder = (
        await session.execute(
            select(table.c.subject_id).where(table.c.tenant_id == tenant, table.c.id_hash == id_hash).with_for_update()
        )
    ).scalar_one()
    if holder == subject_id:
        return DeviceLinkOut(subject_id=subject_id, merged_subject_id=None, events_merged=0)
    kinds = set(
        (await session.execute(select(table.c.type).where(table.c.tenant_id == tenant, table.c.subject_id == holder))).scalars()
    )
    if kinds - {DEVICE}:
        raise Conflict("that device_id belongs to another known subject", errors=[{"loc": ["body", "device_id"], "msg": "taken"}])
    await session.execute(
        update(SubjectIdentifier)
        .where(col(SubjectIdentifier.tenant_id) == tenant, col(SubjectIdentifier.subject_id) == holder)
        .values(subject_id=subject_id)
    )
    await session.execute(
        update(Subject).where(col(Subject.tenant_id) == tenant, col(Subject.id) == holder).values(merged_into=subject_id)
    )
    copied = await _copy_history(session, tenant=tenant, source=holder, target=subject_id, actor=actor)
    return DeviceLinkOut(subject_id=subject_id, merged_subject_id=holder, events_merged=copied)


def _origin(row) -> str:
    """The event a decision was first recorded as: itself, or for a copy the original it was copied from."""
    evidence = orjson.loads(row["evidence"]) if isinstance(row["evidence"], str) else row["evidence"]
    merged = (evidence or {}).get("merged_from") if row["method"] == LINK else None
    if not isinstance(merged, dict):
        return str(row["event_id"])
    return str(merged.get("origin") or merged["event_id"])


async def _copy_history(session: AsyncSession, *, tenant: str, source: uuid.UUID, target: uuid.UUID, actor: str) -> int:
    events = table_of(ConsentEvent)
    rows = (
        await session.execute(
            select(events).where(events.c.tenant_id == tenant, events.c.subject_id == source).order_by(events.c.seq)
        )
    ).mappings().all()
    # A decision the target already holds (itself or a copy of it) is not copied again: devices linked back and
    # forth between two people would otherwise double their histories on every link.
    held = {
        _origin(row)
        for row in (
            await session.execute(
                select(events.c.event_id, events.c.method, events.c.evidence)
                .where(events.c.tenant_id == tenant, events.c.subject_id == target)
            )
        ).mappings()
    }
    rows = [row for row in rows if _origin(row) not in held]
    if not rows:
        return 0
    rules = await purposes.rules(session, tenant=tenant, keys={row["purpose"] for row in rows})
    copies = []
    for row in rows:
        if row["purpose"] not in rules:
            continue  # a purpose deleted since: nothing to decide with it
        copies.append(Draft(
            event_id=new_id(), tenant_id=tenant, subject_id=target, purpose=row["purpose"],
            # The version it was given under, not today's.
            purpose_version=row["purpose_version"], channel=row["channel"], status=row["status"],
            captured_at=row["captured_at"], source=row["source"], method=LINK, policy_version=row["policy_version"],
            collection_point=row["collection_point"], actor=actor,
            evidence={
                "merged_from": {
                    "event_id": str(row["event_id"]), "subject_id": str(source), "method": row["method"],
                    "origin": _origin(row),
                },
                "original_evidence": row["evidence"],
            },
        ))
    if copies:
        await consents.append(session, copies, rules)
    return len(copies)
