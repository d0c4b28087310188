"""Checks: may the tenant contact this subject for this purpose on this channel, and why."""

from datetime import datetime
from typing import Any

from app.errors import AppError, NotFound
from app.metrics import check_decision
from app.models.checks import BatchCheckIn, CheckIn
from app.models.common import SubjectRef
from app.models.consents import NO_CHANNEL
from app.services.checks.decision import Decision, decide, expires_at
from app.services.checks.readers import Found, LookupKey, PostgresReader, SqlReader
from app.services.purposes import storage_channel
from app.services.subjects import IdentifierKeys


def lookup_key(keys: IdentifierKeys, tenant: str, ref: SubjectRef, *, loc: list[str | int]) -> LookupKey:
    """How a reader finds the subject: by id, or by the blind index of the normalised identifier."""
    if ref.subject_id is not None:
        return "id", ref.subject_id
    kind, value = ref.kind_and_value()
    return "hash", keys.lookup_hash(tenant, kind, value, loc=tuple(loc))


def decision(found: Found, at: datetime) -> Decision:
    """The decision on a check's facts (`found.rule` must be known)."""
    assert found.rule is not None, "a check of an unknown purpose"
    return decide(
        found.rule, subject_known=found.subject_id is not None, flags=found.flags, standing=found.standing, at=at,
        suppressed=found.suppressed,
    )


def answer(*, purpose: str, channel: str | None, found: Found, at: datetime) -> dict[str, Any]:
    """The check's answer as a plain dict (the hot path serialises it without a model)."""
    rule = found.rule
    assert rule is not None, "a check of an unknown purpose"
    decided = decision(found, at)
    check_decision(decided.reason, decided.allowed).inc()
    standing = found.standing
    consent = None
    if standing is not None:
        consent = {
            "event_id": standing.event_id,
            "status": standing.status,
            "captured_at": standing.captured_at,
            "expires_at": expires_at(rule, standing),
            "policy_version": standing.policy_version,
        }
    return {
        "allowed": decided.allowed,
        "reason": decided.reason,
        "subject_id": found.subject_id,
        "purpose": purpose,
        "channel": channel,
        "legal_basis": rule.legal_basis,
        "consent": consent,
        "checked_at": at,
    }


class Checker:
    """Answers checks through the backend's reader; the decision is the same pure function for both."""

    def __init__(self, reader: PostgresReader | SqlReader, keys: IdentifierKeys) -> None:
        self.reader = reader
        self.keys = keys

    async def one(self, *, tenant: str, body: CheckIn, at: datetime) -> dict[str, Any]:
        """A single check in one database round trip; 404 for an unknown purpose, 422 for a foreign channel."""
        lookup = lookup_key(self.keys, tenant, body.subject, loc=["body", "subject"])
        found: Found = await self.reader.one(tenant, lookup, body.purpose, body.channel or NO_CHANNEL)
        if found.rule is None:
            raise NotFound("purpose", body.purpose)
        storage_channel(found.rule, body.channel, loc=["body", "channel"])
        return answer(purpose=body.purpose, channel=body.channel, found=found, at=at)

    async def many(self, *, tenant: str, body: BatchCheckIn, at: datetime) -> list[dict[str, Any]]:
        """Up to 10,000 checks with a few set-based queries, answered in order; an item whose subject, purpose or
        channel is invalid answers `{"error": ...}` in its place and the rest are answered."""
        errors: dict[int, str] = {}
        lookups: list[LookupKey | None] = []
        for index, check in enumerate(body.checks):
            try:
                lookups.append(lookup_key(self.keys, tenant, check.subject, loc=["body", "checks", index, "subject"]))
            except AppError as exc:
                errors[index] = exc.detail
                lookups.append(None)
        found = await self.reader.many(
            tenant,
            {k for k in lookups if k is not None},
            {c.purpose for i, c in enumerate(body.checks) if i not in errors},
            {c.channel for i, c in enumerate(body.checks) if c.channel is not None and i not in errors},
        )
        results: list[dict[str, Any]] = []
        for index, (check, lookup) in enumerate(zip(body.checks, lookups, strict=True)):
            rule = found.rules.get(check.purpose)
            if lookup is None or rule is None:
                results.append({"error": errors.get(index) or f"unknown purpose '{check.purpose}'"})
                continue
            try:
                channel = storage_channel(rule, check.channel, loc=["body", "checks", index, "channel"])
            except AppError as exc:
                results.append({"error": exc.detail})
                continue
            results.append(answer(purpose=check.purpose, channel=check.channel, found=found.one(lookup, check.purpose, channel), at=at))
        return results
