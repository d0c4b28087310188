"""Purposes: define, version and read them."""

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import NotFound, Unprocessable
from app.models import Purpose, PurposeVersion
from app.models.base import table_of, utcnow
from app.models.purposes import PurposeIn, PurposeOut, PurposeWrite
from app.services.kit import upsert
from app.services.purposes.cache import bump
from app.services.purposes.rules import Rule

DEFINITION_FIELDS = tuple(PurposeIn.model_fields)


def to_out(purpose: Purpose) -> PurposeOut:
    return PurposeOut.model_validate(purpose, from_attributes=True)


def to_rule(purpose: Purpose) -> Rule:
    return Rule(
        key=purpose.key,
        legal_basis=purpose.legal_basis,
        channels=tuple(purpose.channels),
        lifespan_days=purpose.lifespan_days,
        reconfirm_days=purpose.reconfirm_days,
        version=purpose.version,
        consent_from_version=purpose.consent_from_version,
    )


async def put(session: AsyncSession, *, tenant: str, key: str, body: PurposeWrite) -> PurposeOut:
    """Create or change a purpose; its version goes up by one when its definition changes or the change is declared
    material (`reconsent`). A new recipient (`third_party`) or a material change makes earlier grants stop counting."""
    if body.double_opt_in:
        # Accepting it without holding grants as pending would let unconfirmed sign-ups count as consent.
        raise Unprocessable("double opt-in is not available yet: leave double_opt_in false", loc=["body", "double_opt_in"])
    definition = body.model_dump(exclude={"reconsent"})
    # Claim the key first so that two concurrent creations cannot both insert version 1.
    await session.execute(
        upsert(session, table_of(Purpose))
        .values(tenant_id=tenant, key=key, version=0, **definition)
        .on_conflict_do_nothing(index_elements=["tenant_id", "key"])
    )
    purpose = (
        await session.execute(
            select(Purpose).where(col(Purpose.tenant_id) == tenant, col(Purpose.key) == key).with_for_update()
        )
    ).scalar_one()
    current = {field: getattr(purpose, field) for field in DEFINITION_FIELDS}
    if purpose.version > 0 and current == definition and not body.reconsent:
        return to_out(purpose)
    new_recipient = purpose.version > 0 and current["third_party"] != definition["third_party"]
    purpose.sqlmodel_update(definition)
    purpose.version += 1
    if purpose.version == 1 or new_recipient or body.reconsent:
        purpose.consent_from_version = purpose.version
    purpose.updated_at = utcnow()
    session.add(purpose)
    recorded = {**definition, "consent_from_version": purpose.consent_from_version, "reconsent": body.reconsent}
    session.add(PurposeVersion(tenant_id=tenant, key=key, version=purpose.version, definition=recorded))
    await bump(session, tenant=tenant)
    await session.flush()
    return to_out(purpose)


async def get(session: AsyncSession, *, tenant: str, key: str) -> Purpose:
    """One purpose of the tenant, or 404."""
    purpose = await session.get(Purpose, (tenant, key))
    if purpose is None:
        raise NotFound("purpose", key)
    return purpose


async def list_all(session: AsyncSession, *, tenant: str) -> list[Purpose]:
    """Every purpose of the tenant, by key."""
    result = await session.execute(select(Purpose).where(col(Purpose.tenant_id) == tenant).order_by(col(Purpose.key)))
    return list(result.scalars())


async def rules(session: AsyncSession, *, tenant: str, keys: set[str] | None = None) -> dict[str, Rule]:
    """The decision rules of the tenant's purposes (all, or those named)."""
    query = select(Purpose).where(col(Purpose.tenant_id) == tenant)
    if keys is not None:
        query = query.where(col(Purpose.key).in_(keys))
    return {purpose.key: to_rule(purpose) for purpose in (await session.execute(query)).scalars()}
