"""What a check reads, fetched in as few round trips as possible: asyncpg on PostgreSQL, SQLAlchemy Core on SQLite.

Both readers return the same plain values; the decision itself is `decision.decide`, shared by both.
"""

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
import orjson
from sqlalchemy import and_, select
from sqlalchemy.engine import RowMapping

from app.db import Database, acquire
from app.models import ConsentState, Purpose, Subject, SubjectIdentifier, Suppression
from app.models.base import table_of
from app.services.checks.decision import Standing
from app.services.kit import in_slices
from app.services.purposes import Rule, RuleCache

# Lookup keys: ("hash", blind index) for identifiers, ("id", uuid) for subject ids.
LookupKey = tuple[str, object]
# One streamed line's facts: subject id as the answer writes it (None: unknown), flags, the standing decision (without
# its event id, which a streamed answer does not name), suppressed.
Facts = tuple[str | None, list[str], Standing | None, bool]


@dataclass(frozen=True, slots=True)
class ChunkFacts:
    """A streamed chunk's facts for one purpose and channel: the purpose rule (None: unknown purpose) and one
    Facts per lookup, in the order of the lookups."""

    rule: Rule | None
    facts: list[Facts]


@dataclass(frozen=True, slots=True)
class Found:
    """A single check's facts: the purpose rule (None: unknown purpose), the subject and its standing decision."""

    rule: Rule | None
    subject_id: uuid.UUID | None = None
    flags: list[str] = field(default_factory=list)
    standing: Standing | None = None
    suppressed: bool = False


@dataclass
class FoundMany:
    """A batch's facts: rules by purpose, subject ids by lookup key, flags by subject, standings by state key."""

    rules: dict[str, Rule]
    subjects: dict[LookupKey, uuid.UUID]
    flags: dict[uuid.UUID, list[str]]
    standings: dict[tuple[uuid.UUID, str, str], Standing]
    # (blind index, channel) and (subject id, channel) pairs under a suppression.
    suppressed: set[tuple[object, str]] = field(default_factory=set)

    def one(self, lookup: LookupKey, purpose: str, channel: str) -> Found:
        """The facts of one check among the batch's (`channel` as stored; rule None: unknown purpose)."""
        rule = self.rules.get(purpose)
        if rule is None:
            return Found(rule=None)
        suppressed = self.is_suppressed(lookup, channel)
        subject_id = self.subjects.get(lookup)
        if subject_id is None:
            return Found(rule=rule, suppressed=suppressed)
        return Found(
            rule=rule, subject_id=subject_id, flags=self.flags.get(subject_id, []),
            standing=self.standings.get((subject_id, purpose, channel)), suppressed=suppressed,
        )

    def is_suppressed(self, lookup: LookupKey, channel: str) -> bool:
        """Whether the identifier looked up, or any identifier of the subject it names, is suppressed on `channel`."""
        if not channel or not self.suppressed:
            return False
        subject_id = self.subjects.get(lookup)
        return (lookup[1], channel) in self.suppressed or (subject_id is not None and (subject_id, channel) in self.suppressed)


def _rule(key: str, row) -> Rule:
    channels = row["channels"]
    if isinstance(channels, str):
        channels = orjson.loads(channels)
    return Rule(
        key, row["legal_basis"], tuple(channels), row["lifespan_days"], row["reconfirm_days"], row["version"],
        row["consent_from_version"],
    )


def _standing(row) -> Standing:
    return Standing(row["event_id"], row["status"], row["captured_at"], row["policy_version"], row["purpose_version"])


def _flags(value) -> list[str]:
    if value == "[]":  # almost every subject: no JSON parse
        return []
    return orjson.loads(value) if isinstance(value, str) else list(value or [])


# The purpose's rule comes from the worker's RuleCache, exact by the tenant's config version read in the same
# statement (purposes.cache), so the statement reads no purpose row.
# Suppressed: the identifier looked up, or any identifier of the subject found. Two EXISTS, each an index
# probe: an OR inside one would make PostgreSQL scan the tenant's whole suppression list (millions for TPS).
# Both come after one probe for any suppression of the tenant, which spares a tenant without any (a subplan is
# evaluated only when the AND before it holds).
# $1 tenant, $4 channel as stored: the identifier `id_hash` is suppressed, or any identifier of the subject `s`.
_HASH_SUPPRESSED = (
    "EXISTS (SELECT 1 FROM suppressions sp WHERE sp.tenant_id = $1 AND sp.id_hash = {id_hash} AND sp.channel = $4)"
)
_SUBJECT_SUPPRESSED = """EXISTS (
           SELECT 1 FROM subject_identifiers si2
           JOIN suppressions sp ON sp.tenant_id = si2.tenant_id AND sp.id_hash = si2.id_hash AND sp.channel = $4
           WHERE si2.tenant_id = $1 AND si2.subject_id = s.id
       )"""
_PG_SELECT = """
SELECT t.config_version,
       s.id AS subject_id, s.flags, cs.event_id, cs.status, cs.captured_at, cs.policy_version, cs.purpose_version,
       $4 <> '' AND EXISTS (SELECT 1 FROM suppressions sp0 WHERE sp0.tenant_id = $1) AND ({own_hash}{by_subject}) AS suppressed
FROM tenants t
{subject_join}
LEFT JOIN consent_state cs
       ON cs.tenant_id = t.key AND cs.subject_id = s.id AND cs.purpose = $2 AND cs.channel = $4
WHERE t.key = $1
"""
PG_ONE_BY_HASH = _PG_SELECT.format(
    own_hash=_HASH_SUPPRESSED.format(id_hash="$3") + " OR ", by_subject=_SUBJECT_SUPPRESSED,
    subject_join="LEFT JOIN subject_identifiers si ON si.tenant_id = t.key AND si.id_hash = $3\n"
    "LEFT JOIN subjects s ON s.id = si.subject_id",
)
PG_ONE_BY_ID = _PG_SELECT.format(
    own_hash="", by_subject=_SUBJECT_SUPPRESSED, subject_join="LEFT JOIN subjects s ON s.tenant_id = t.key AND s.id = $3::uuid"
)
# Suppressions of the identifiers looked up, and of any identifier of the subjects found.
PG_SUPPRESSED = """
SELECT sp.id_hash AS key, sp.channel FROM suppressions sp
WHERE sp.tenant_id = $1 AND sp.channel = ANY($2::text[]) AND sp.id_hash = ANY($3::text[])
UNION
SELECT si.subject_id::text AS key, sp.channel FROM subject_identifiers si
JOIN suppressions sp ON sp.tenant_id = si.tenant_id AND sp.id_hash = si.id_hash
WHERE si.tenant_id = $1 AND si.subject_id = ANY($4::uuid[]) AND sp.channel = ANY($2::text[])
"""

# A streamed chunk in one statement: a row per lookup, in the order sent (`n`), each with what PG_ONE_BY_HASH or
# PG_ONE_BY_ID reads for a single check. The lookups come as two arrays of the chunk's length, a blind index or a
# subject id at each position (the other NULL). Every join is on a unique key: one row per lookup.
# Each table is probed in the order of its own key: the identifiers by blind index, then the subjects and their
# states by subject id (`by_subject`), which, ids being made in time order (models/base.py, new_id), is also
# about the order their rows were written in. A list comes in no useful order; sorted, the probes of one chunk
# walk each index and heap forward instead of jumping (a 25k chunk of 1M subjects: 740-800 ms -> 440-490 ms).
# The ORDER BYs inside the MATERIALIZED CTEs fix the order the nested loops probe in; `chunk` turns hash and merge
# joins off, which would read each table whole for every chunk.
PG_CHUNK = """
WITH found AS MATERIALIZED (
    SELECT w.n, w.id_hash, coalesce(si.subject_id, w.by_id) AS sid
    FROM (SELECT * FROM unnest($2::text[], $3::uuid[]) WITH ORDINALITY AS u(id_hash, by_id, n) ORDER BY u.id_hash) w
    LEFT JOIN subject_identifiers si ON si.tenant_id = $1 AND si.id_hash = w.id_hash
), by_subject AS MATERIALIZED (SELECT * FROM found ORDER BY sid)
SELECT w.n, s.id::text AS subject_id, s.flags, cs.status, cs.captured_at, cs.policy_version, cs.purpose_version,
       $4 <> '' AND ({by_hash} OR {by_subject}) AS suppressed
FROM by_subject w
LEFT JOIN subjects s ON s.tenant_id = $1 AND s.id = w.sid
LEFT JOIN consent_state cs ON cs.tenant_id = $1 AND cs.subject_id = s.id AND cs.purpose = $5 AND cs.channel = $4
""".format(by_hash=_HASH_SUPPRESSED.format(id_hash="w.id_hash"), by_subject=_SUBJECT_SUPPRESSED)
PG_RULE = (
    "SELECT legal_basis, channels, lifespan_days, reconfirm_days, version, consent_from_version FROM purposes"
    " WHERE tenant_id = $1 AND key = $2"
)


def _chunk_facts(row) -> Facts:
    """A row of PG_CHUNK, read by position (a million rows: by name costs more). The ids come as text: asyncpg
    makes a UUID object in about a microsecond, and the answer writes the id as text anyway."""
    _, subject_id, flags, status, captured_at, policy_version, purpose_version, suppressed = row
    standing = None if status is None else Standing(None, status, captured_at, policy_version, purpose_version)
    return subject_id, _flags(flags) if subject_id is not None else [], standing, bool(suppressed)


def _found(rule: Rule | None, row) -> Found:
    if rule is None:
        return Found(rule=None)
    standing = None
    if row["status"] is not None:
        standing = _standing(row)
    return Found(
        rule=rule, subject_id=row["subject_id"], flags=_flags(row["flags"]), standing=standing,
        suppressed=bool(row["suppressed"]),
    )


class PostgresReader:
    """Reads through the asyncpg pool: a single check is one round trip, a batch four set-based queries."""

    def __init__(self, pool: asyncpg.Pool, rules: RuleCache) -> None:
        self.pool = pool
        self.rules = rules

    async def one(self, tenant: str, lookup: LookupKey, purpose: str, channel: str) -> Found:
        query = PG_ONE_BY_HASH if lookup[0] == "hash" else PG_ONE_BY_ID
        async with acquire(self.pool) as connection:
            row = await connection.fetchrow(query, tenant, purpose, lookup[1], channel)
            if row is None:  # no such tenant
                return Found(rule=None)
            rules = await self.rules.current(connection, tenant=tenant, version=row["config_version"])
        return _found(rules.get(purpose), row)

    async def many(self, tenant: str, lookups: set[LookupKey], purposes: set[str], channels: set[str]) -> FoundMany:
        hashes = [value for kind, value in lookups if kind == "hash"]
        ids = [value for kind, value in lookups if kind == "id"]
        named_channels = [channel for channel in channels if channel]
        async with acquire(self.pool) as connection:
            purpose_rows = await connection.fetch(
                "SELECT key, legal_basis, channels, lifespan_days, reconfirm_days, version, consent_from_version FROM purposes"
                " WHERE tenant_id = $1 AND key = ANY($2::text[])",
                tenant,
                list(purposes),
            )
            holders = await connection.fetch(
                "SELECT id_hash, subject_id FROM subject_identifiers WHERE tenant_id = $1 AND id_hash = ANY($2::text[])",
                tenant,
                hashes,
            )
            subject_rows = await connection.fetch(
                "SELECT id, flags FROM subjects WHERE tenant_id = $1 AND id = ANY($2::uuid[])",
                tenant,
                ids + [row["subject_id"] for row in holders],
            )
            state_rows = await connection.fetch(
                "SELECT subject_id, purpose, channel, event_id, status, captured_at, policy_version, purpose_version"
                " FROM consent_state"
                " WHERE tenant_id = $1 AND subject_id = ANY($2::uuid[]) AND purpose = ANY($3::text[])",
                tenant,
                [row["id"] for row in subject_rows],
                list(purposes),
            )
            suppressed_rows = []
            if named_channels:
                suppressed_rows = await connection.fetch(
                    PG_SUPPRESSED, tenant, named_channels, hashes, [row["id"] for row in subject_rows]
                )
        found = _assemble(purpose_rows, holders, subject_rows, state_rows)
        found.suppressed = _suppressed(suppressed_rows)
        return found

    async def chunk(self, tenant: str, lookups: list[LookupKey], purpose: str, channel: str) -> ChunkFacts:
        """A streamed chunk (`channel` as stored): the rule, then every lookup's facts in one statement."""
        hashes = [value if kind == "hash" else None for kind, value in lookups]
        ids = [value if kind == "id" else None for kind, value in lookups]
        async with acquire(self.pool) as connection, connection.transaction(readonly=True):
            # A chunk's plan costs past jit_above_cost, and compiling it takes longer than running it. SET LOCAL:
            # the pool does not reset sessions (_keep_session), so nothing may outlive this transaction.
            await connection.execute("SET LOCAL jit = off; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
            rule_row = await connection.fetchrow(PG_RULE, tenant, purpose)
            if rule_row is None or not lookups:
                return ChunkFacts(None if rule_row is None else _rule(purpose, rule_row), [])
            rows = await connection.fetch(PG_CHUNK, tenant, hashes, ids, channel, purpose)
        # The rows come in subject order; each goes back to its lookup's place (n counts from 1).
        facts: list[Facts | None] = [None] * len(lookups)
        for row in rows:
            facts[row[0] - 1] = _chunk_facts(row)
        return ChunkFacts(_rule(purpose, rule_row), cast(list[Facts], facts))


def chunk_of(found: FoundMany, lookups: list[LookupKey], purpose: str, channel: str) -> ChunkFacts:
    """A batch's facts as a streamed chunk's."""
    facts = []
    for lookup in lookups:
        one = found.one(lookup, purpose, channel)
        subject_id = None if one.subject_id is None else str(one.subject_id)
        standing = None if one.standing is None else one.standing._replace(event_id=None)
        facts.append((subject_id, one.flags, standing, one.suppressed))
    return ChunkFacts(found.rules.get(purpose), facts)


def _assemble(purpose_rows, holders, subject_rows, state_rows) -> FoundMany:
    flags = {row["id"]: _flags(row["flags"]) for row in subject_rows}
    found = {("hash", row["id_hash"]): row["subject_id"] for row in holders}
    found.update({("id", subject_id): subject_id for subject_id in flags})
    return FoundMany(
        rules={row["key"]: _rule(row["key"], row) for row in purpose_rows},
        subjects=found,
        flags=flags,
        standings={
            (row["subject_id"], row["purpose"], row["channel"]): _standing(row)
            for row in state_rows
        },
    )


def _suppressed(rows) -> set[tuple[object, str]]:
    """Keys are blind indexes (64 hex characters) or subject ids (as UUIDs)."""
    return {(row["key"] if len(row["key"]) == 64 else uuid.UUID(row["key"]), row["channel"]) for row in rows}


class SqlReader:
    """Reads through SQLAlchemy Core (the SQLite backend); the same facts as PostgresReader."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def one(self, tenant: str, lookup: LookupKey, purpose: str, channel: str) -> Found:
        return (await self.many(tenant, {lookup}, {purpose}, {channel})).one(lookup, purpose, channel)

    async def chunk(self, tenant: str, lookups: list[LookupKey], purpose: str, channel: str) -> ChunkFacts:
        """A streamed chunk's facts, from the batch queries."""
        return chunk_of(await self.many(tenant, set(lookups), {purpose}, {channel}), lookups, purpose, channel)

    async def many(self, tenant: str, lookups: set[LookupKey], purposes: set[str], channels: set[str]) -> FoundMany:
        p, si, s, cs = table_of(Purpose), table_of(SubjectIdentifier), table_of(Subject), table_of(ConsentState)
        sp = table_of(Suppression)
        hashes = [value for kind, value in lookups if kind == "hash"]
        ids = [value for kind, value in lookups if kind == "id"]
        named_channels = [channel for channel in channels if channel]
        async with self.database.reading() as connection:
            purpose_rows = (
                await connection.execute(
                    select(
                        p.c.key, p.c.legal_basis, p.c.channels, p.c.lifespan_days, p.c.reconfirm_days, p.c.version,
                        p.c.consent_from_version,
                    )
                    .where(p.c.tenant_id == tenant, p.c.key.in_(purposes))
                )
            ).mappings().all()
            holders: list[RowMapping] = []
            for chunk in in_slices(hashes):
                holders += (
                    await connection.execute(
                        select(si.c.id_hash, si.c.subject_id).where(si.c.tenant_id == tenant, si.c.id_hash.in_(chunk))
                    )
                ).mappings().all()
            subject_rows: list[RowMapping] = []
            state_rows: list[RowMapping] = []
            for chunk in in_slices(ids + [row["subject_id"] for row in holders]):
                subject_rows += (
                    await connection.execute(select(s.c.id, s.c.flags).where(s.c.tenant_id == tenant, s.c.id.in_(chunk)))
                ).mappings().all()
            for chunk in in_slices([row["id"] for row in subject_rows]):
                state_rows += (
                    await connection.execute(
                        select(
                            cs.c.subject_id, cs.c.purpose, cs.c.channel, cs.c.event_id, cs.c.status,
                            cs.c.captured_at, cs.c.policy_version, cs.c.purpose_version,
                        ).where(and_(cs.c.tenant_id == tenant, cs.c.subject_id.in_(chunk), cs.c.purpose.in_(purposes)))
                    )
                ).mappings().all()
            suppressed_rows: list[Mapping[Any, Any]] = []  # result rows, and dicts of the same keys
            for chunk in in_slices(hashes) if named_channels else []:
                suppressed_rows += (
                    await connection.execute(
                        select(sp.c.id_hash.label("key"), sp.c.channel).where(
                            sp.c.tenant_id == tenant, sp.c.channel.in_(named_channels), sp.c.id_hash.in_(chunk)
                        )
                    )
                ).mappings().all()
            for chunk in in_slices([row["id"] for row in subject_rows]) if named_channels else []:
                suppressed_rows += [
                    {"key": str(row["subject_id"]), "channel": row["channel"]}
                    for row in (
                        await connection.execute(
                            select(si.c.subject_id, sp.c.channel)
                            .join(sp, and_(sp.c.tenant_id == si.c.tenant_id, sp.c.id_hash == si.c.id_hash))
                            .where(si.c.tenant_id == tenant, si.c.subject_id.in_(chunk), sp.c.channel.in_(named_channels))
                        )
                    ).mappings()
                ]
        found = _assemble(purpose_rows, holders, subject_rows, state_rows)
        found.suppressed = _suppressed(suppressed_rows)
        return found
