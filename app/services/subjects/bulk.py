"""Bulk writes of subjects and their identifiers on PostgreSQL (imports), with COPY and arrays (see ledger/bulk.py)."""

from sqlalchemy.ext.asyncio import AsyncSession

from app.services.kit import raw_connection, through_temp_table

# Identifiers are copied here first (COPY takes rows as they are, without asyncpg's per-element array checks),
# then claimed with ON CONFLICT (kit.through_temp_table).
_CLAIMS = "import_identifier_claims"
CREATE_CLAIMS = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_CLAIMS} (id_hash text, subject_id uuid, type text, value_sealed text) "
    "ON COMMIT DELETE ROWS"
)
# Only the constant _CLAIMS is interpolated; the values are bound.
CLAIM_COPIED = (
    "WITH claimed AS ("  # noqa: S608
    " INSERT INTO subject_identifiers (tenant_id, id_hash, subject_id, type, value_sealed, created_at)"
    f" SELECT $1, id_hash, subject_id, type, value_sealed, $2 FROM {_CLAIMS} ORDER BY id_hash"
    " ON CONFLICT (tenant_id, id_hash) DO NOTHING RETURNING 1"
    ") SELECT count(*) FROM claimed"
)


async def insert_subjects(session: AsyncSession, *, tenant: str, ids: list, created_at) -> None:
    """New subjects (their ids are fresh random UUIDs: nothing can conflict), without flags."""
    db = await raw_connection(session)
    await db.copy_records_to_table(
        "subjects", records=[(i, tenant, "[]", created_at) for i in ids], columns=("id", "tenant_id", "flags", "created_at")
    )


async def claim_identifiers(session: AsyncSession, *, tenant: str, rows: list[dict], created_at) -> int:
    """Attach identifiers in the given (blind-index) order; one another subject holds already is left alone.
    The number attached."""
    return await through_temp_table(
        await raw_connection(session), create=CREATE_CLAIMS, table=_CLAIMS,
        records=[(r["id_hash"], r["subject_id"], r["type"], r["value_sealed"]) for r in rows],
        statement=CLAIM_COPIED, args=(tenant, created_at),
    )


async def holders(session: AsyncSession, *, tenant: str, hashes: list[str]) -> dict:
    """The subject holding each of these blind indexes (those held by nobody are absent)."""
    db = await raw_connection(session)
    rows = await db.fetch(
        "SELECT id_hash, subject_id FROM subject_identifiers WHERE tenant_id = $1 AND id_hash = ANY($2::text[])",
        tenant, hashes,
    )
    return {row[0]: row[1] for row in rows}
