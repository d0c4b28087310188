"""What the ledger records, as typed records: a write's validated `Record` of `Decided` decisions, each made into a
`Draft` for its subject, which joins the subject's chain as an `Event` (chains.py).

Nothing here changes after it is made: a draft becomes an event by `chains.extend`, the one place where an event is
stamped with `recorded_at` and its chain fields. Both halves of a write (consents.py on a session, pg_write.py on
asyncpg) and the import, the banner and device links make the same records.
"""

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from app.models.base import new_id
from app.services.purposes import Rule


@dataclass(frozen=True, slots=True)
class Decided:
    """One decision of a record, as validated: purpose, stored channel, status."""

    purpose: str
    channel: str
    status: str
    # How it was given, when not the record's own method (a banner's GPC-implied withdrawals).
    method: str | None = None


@dataclass(frozen=True, slots=True)
class Record:
    """What one consent write stores, once validated: its decisions and what they share."""

    tenant: str
    decisions: tuple[Decided, ...]
    # None: the moment the ledger records it.
    captured_at: datetime | None
    source: str
    method: str
    policy_version: str | None
    collection_point: str | None
    actor: str
    evidence: dict | None


# What a draft and its event say alike: one decision for one subject, with where and how it was given. Drafts and
# events are named tuples, made positionally: a frozen dataclass of 20 fields cost 4 us to make, one by keyword 7,
# and an import makes two of them for each of a million decisions.
DECISION_FIELDS = (
    "event_id", "tenant_id", "subject_id", "purpose", "purpose_version", "channel", "status", "source", "method",
    "policy_version", "collection_point", "actor", "evidence",
)


class Draft(NamedTuple):
    """A decision before it joins the subject's chain (the DECISION_FIELDS, then `captured_at`)."""

    event_id: uuid.UUID
    tenant_id: str
    subject_id: uuid.UUID
    purpose: str
    purpose_version: int
    channel: str
    status: str
    source: str
    method: str
    policy_version: str | None
    collection_point: str | None
    actor: str
    evidence: dict | None
    # None: the moment the ledger records it (chains.extend sets it).
    captured_at: datetime | None


class Event(NamedTuple):
    """An event as the ledger holds it: a draft stamped and placed in its subject's chain (chains.extend)."""

    event_id: uuid.UUID
    tenant_id: str
    subject_id: uuid.UUID
    purpose: str
    purpose_version: int
    channel: str
    status: str
    source: str
    method: str
    policy_version: str | None
    collection_point: str | None
    actor: str
    evidence: dict | None
    captured_at: datetime
    recorded_at: datetime
    chain_index: int
    prev_event_id: uuid.UUID | None
    prev_hash: str
    hash: str

    def row(self) -> dict[str, Any]:
        """The event as a row of consent_events (without its `seq`, which the database gives it)."""
        return dict(zip(EVENT_FIELDS, self, strict=True))


# The columns of consent_events but `seq`.
EVENT_FIELDS = Event._fields


def drafts(record: Record, *, subject_id: uuid.UUID, rules: Mapping[str, Rule]) -> list[Draft]:
    """A draft for each of the record's decisions, under its purpose's current version, in the record's order."""
    return [
        Draft(
            new_id(), record.tenant, subject_id, decided.purpose, rules[decided.purpose].version, decided.channel,
            decided.status, record.source, decided.method or record.method, record.policy_version,
            record.collection_point, record.actor, record.evidence, record.captured_at,
        )
        for decided in record.decisions
    ]

