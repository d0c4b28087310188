"""Each worker's cache of its tenants' purpose rules, kept exact by the tenant's config version.

Every change of a purpose (or of the banner) moves `tenants.config_version` in the transaction that makes it
(`bump`). A write reads the version in a statement it runs anyway (ledger/pg_write.py LOOKUP) and uses the cached
rules only when they are of that version, so a rule change acknowledged to any client, by any worker or replica,
is seen by the next write that starts after it: nothing is served from a cache older than the version read.
"""

import asyncpg
import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Tenant
from app.models.base import table_of
from app.services.kit import Versioned
from app.services.purposes.rules import Rule

PG_RULES = (
    "SELECT key, legal_basis, channels, lifespan_days, reconfirm_days, version, consent_from_version "
    "FROM purposes WHERE tenant_id = $1"
)


async def bump(session: AsyncSession, *, tenant: str) -> None:
    """Move the tenant's config version, in the caller's transaction: every worker's cache of it goes stale."""
    table = table_of(Tenant)
    await session.execute(
        sa.update(table).where(table.c.key == tenant).values(config_version=table.c.config_version + 1)
    )


async def load_rules_pg(connection: asyncpg.Connection, *, tenant: str) -> dict[str, Rule]:
    """The tenant's rules, read through asyncpg."""
    rules = {}
    for row in await connection.fetch(PG_RULES, tenant):
        channels = row["channels"]
        rules[row["key"]] = Rule(
            key=row["key"], legal_basis=row["legal_basis"],
            channels=tuple(orjson.loads(channels) if isinstance(channels, str) else channels),
            lifespan_days=row["lifespan_days"], reconfirm_days=row["reconfirm_days"], version=row["version"],
            consent_from_version=row["consent_from_version"],
        )
    return rules


class RuleCache(Versioned[dict[str, Rule]]):
    """Rules by tenant, each with the config version it was read at."""

    async def current(self, connection: asyncpg.Connection, *, tenant: str, version: int) -> dict[str, Rule]:
        """The tenant's rules as of `version` (read just now): the cached ones when they are that version."""
        rules = self.get(tenant, version)
        if rules is None:
            rules = await load_rules_pg(connection, tenant=tenant)
            self.put(tenant, version, rules)
        return rules
