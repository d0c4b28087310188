"""The Alembic migrations build exactly the schema the models describe, on both backends."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.models import metadata


async def test_migrated_schema_matches_the_models(backend):
    def diff(connection) -> list:  # noqa: ANN001
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, metadata)

    async with backend.database.engine.connect() as connection:
        differences = await connection.run_sync(diff)
    assert differences == []
