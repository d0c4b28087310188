"""The consent decision as a pure function, shared by every reader (asyncpg, SQLAlchemy, batch, single)."""

import uuid
from datetime import datetime, timedelta
from typing import NamedTuple

from app.services.purposes import CONSENT_BASED, LEGITIMATE_INTEREST, OWN_BASIS, Rule, grant_expiry


class Standing(NamedTuple):
    """The decision that currently stands for (subject, purpose, channel). A named tuple: a streamed check makes a
    million of them, and a frozen dataclass costs three times as much to make."""

    # None where the reader leaves it out: a streamed chunk, whose answers do not name the event.
    event_id: uuid.UUID | None
    status: str
    captured_at: datetime
    policy_version: str | None
    # The purpose version the decision was given under.
    purpose_version: int


class Decision(NamedTuple):
    allowed: bool
    reason: str


# The answers that name no basis, made once (a stream decides a million lines).
ERASED, RESTRICTED, SUPPRESSED = Decision(False, "erased"), Decision(False, "restricted"), Decision(False, "suppressed")
UNKNOWN_SUBJECT, OBJECTED = Decision(False, "unknown_subject"), Decision(False, "objected")
NO_CONSENT, WITHDRAWN = Decision(False, "no_consent"), Decision(False, "withdrawn")
RECONSENT_REQUIRED, EXPIRED = Decision(False, "reconsent_required"), Decision(False, "expired")
CONSENT_GRANTED, LEGITIMATE = Decision(True, "consent_granted"), Decision(True, LEGITIMATE_INTEREST)


def expires_at(rule: Rule, standing: Standing) -> datetime | None:
    """When the standing decision stops counting (grant_expiry)."""
    return grant_expiry(rule, standing.status, standing.captured_at)


def _reconfirm_due(rule: Rule, standing: Standing, at: datetime) -> bool:
    if rule.reconfirm_days is None:
        return False
    return at >= standing.captured_at + timedelta(days=rule.reconfirm_days)


def _outdated(rule: Rule, standing: Standing) -> bool:
    """A grant given under a purpose version before the one consent must come from."""
    return standing.purpose_version < rule.consent_from_version


def is_effective(rule: Rule, standing: Standing, at: datetime) -> bool:
    """Whether the standing decision counts at `at`: a withdrawal always does, a grant until it expires, falls due
    for re-confirmation or is outdated by a material change of its purpose."""
    if standing.status != "granted":
        return True
    expiry = expires_at(rule, standing)
    return (expiry is None or at < expiry) and not _reconfirm_due(rule, standing, at) and not _outdated(rule, standing)


def decide(
    rule: Rule, *, subject_known: bool, flags: list[str], standing: Standing | None, at: datetime, suppressed: bool = False
) -> Decision:
    """May the tenant process this subject's data for this purpose at `at`? With the reason code."""
    if rule.legal_basis in OWN_BASIS:
        return Decision(True, rule.legal_basis)
    if "erased" in flags:
        return ERASED
    if "restricted" in flags:
        return RESTRICTED
    if suppressed:
        return SUPPRESSED
    if not subject_known:
        return UNKNOWN_SUBJECT
    if rule.legal_basis != CONSENT_BASED:
        # Legitimate interest holds until the subject objects.
        if standing is not None and standing.status == "withdrawn":
            return OBJECTED
        return LEGITIMATE
    if standing is None:
        return NO_CONSENT
    if standing.status == "withdrawn":
        return WITHDRAWN
    if _outdated(rule, standing):
        return RECONSENT_REQUIRED
    expiry = expires_at(rule, standing)
    if expiry is not None and at >= expiry:
        return EXPIRED
    if _reconfirm_due(rule, standing, at):
        return RECONSENT_REQUIRED
    return CONSENT_GRANTED
