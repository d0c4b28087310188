"""Alembic migrations, run programmatically (`consentd migrate`, tests) from the package's own folder."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import create_async_engine

HERE = Path(__file__).parent


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


async def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database at `database_url` to `revision`."""
    engine = create_async_engine(database_url, hide_parameters=True)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run, database_url, revision)
    finally:
        await engine.dispose()


def _run(connection, database_url: str, revision: str) -> None:  # noqa: ANN001
    config = alembic_config(database_url)
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
