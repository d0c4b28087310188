"""Alembic migrations, run programmatically (`consentd migrate`, tests) from the package's own folder."""

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Migrated:
    """What an upgrade did: the revision the database was at (None: it had no schema yet) and the one it is at now."""

    before: str | None
    after: str | None
    head: str | None  # the newest revision this package ships

    def describe(self) -> str:
        """One line for the person who ran `consentd migrate`."""
        newest = " (the newest schema)" if self.after == self.head else f" (the newest is {self.head})"
        if self.before == self.after:
            return f"database already at {self.after}{newest}: nothing to do"
        if self.before is None:
            return f"new database: schema created and migrated to {self.after}{newest}"
        return f"database migrated from {self.before} to {self.after}{newest}"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


async def upgrade(database_url: str, revision: str = "head") -> Migrated:
    """Bring the database at `database_url` to `revision`."""
    engine = create_async_engine(database_url, hide_parameters=True)
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(_run, database_url, revision)
    finally:
        await engine.dispose()


def _run(connection, database_url: str, revision: str) -> Migrated:
    before = MigrationContext.configure(connection).get_current_revision()
    config = alembic_config(database_url)
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
    after = MigrationContext.configure(connection).get_current_revision()
    return Migrated(before=before, after=after, head=ScriptDirectory.from_config(config).get_current_head())
