"""Bulk writes of subjects and their identifiers on PostgreSQL (imports), with arrays and unnest (see ledger/bulk.py)."""

from sqlalchemy.ext.asyncio import AsyncSession

from app.services.kit import columns, raw_connection


async def insert_subjects(session: AsyncSession, *, tenant: str, ids: list, created_at) -> None:
    db = await raw_connection(session)
    await db.execute(
        "INSERT INTO subjects (id, tenant_id, flags, created_at) SELECT id, $2, '[]'::json, $3 FROM unnest($1::uuid[]) id",
        ids, tenant, created_at,
    )


async def claim_identifiers(session: AsyncSession, *, tenant: str, rows: list[dict], created_at) -> None:
    """Attach identifiers in the given (blind-index) order; one another subject holds already is left alone."""
    db = await raw_connection(session)
    await db.execute(
        "INSERT INTO subject_identifiers (tenant_id, id_hash, subject_id, type, value_sealed, created_at) "
        "SELECT $1, u.*, $6 FROM unnest($2::text[], $3::uuid[], $4::text[], $5::text[]) AS u "
        "ON CONFLICT (tenant_id, id_hash) DO NOTHING",
        tenant, *columns(rows, ["id_hash", "subject_id", "type", "value_sealed"]), created_at,
    )


async def holders(session: AsyncSession, *, tenant: str, hashes: list[str]) -> dict:
    """The subject holding each of these blind indexes (those held by nobody are absent)."""
    db = await raw_connection(session)
    rows = await db.fetch(
        "SELECT id_hash, subject_id FROM subject_identifiers WHERE tenant_id = $1 AND id_hash = ANY($2::text[])",
        tenant, hashes,
    )
    return {row[0]: row[1] for row in rows}
