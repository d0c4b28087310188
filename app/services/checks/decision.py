"""The consent decision as a pure function, shared by every reader (asyncpg, SQLAlchemy, batch, single)."""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.services.purposes import CONSENT_BASED, LEGITIMATE_INTEREST, OWN_BASIS, Rule, grant_expiry


@dataclass(frozen=True, slots=True)
class Standing:
    """The decision that currently stands for (subject, purpose, channel)."""

    event_id: uuid.UUID
    status: str
    captured_at: datetime
    policy_version: str | None
    # The purpose version the decision was given under.
    purpose_version: int


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str


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
        return Decision(False, "erased")
    if "restricted" in flags:
        return Decision(False, "restricted")
    if suppressed:
        return Decision(False, "suppressed")
    if not subject_known:
        return Decision(False, "unknown_subject")
    if rule.legal_basis != CONSENT_BASED:
        # Legitimate interest holds until the subject objects.
        if standing is not None and standing.status == "withdrawn":
            return Decision(False, "objected")
        return Decision(True, LEGITIMATE_INTEREST)
    if standing is None:
        return Decision(False, "no_consent")
    if standing.status == "withdrawn":
        return Decision(False, "withdrawn")
    if _outdated(rule, standing):
        return Decision(False, "reconsent_required")
    expiry = expires_at(rule, standing)
    if expiry is not None and at >= expiry:
        return Decision(False, "expired")
    if _reconfirm_due(rule, standing, at):
        return Decision(False, "reconsent_required")
    return Decision(True, "consent_granted")
