"""The consent decision as a pure function, shared by every reader (asyncpg, SQLAlchemy, batch, single)."""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.errors import Unprocessable
from app.models.consents import NO_CHANNEL

CONSENT_BASED = "consent"
LEGITIMATE_INTEREST = "legitimate_interest"
# Not consent: service messages and legal duties. No one can withdraw from them, and suppressions, restriction and
# erasure do not reach them (a TPS entry does not stop a call about an order): they answer on their own basis.
OWN_BASIS = frozenset({"contract", "legal_obligation"})


@dataclass(frozen=True, slots=True)
class Rule:
    """What the decision needs to know about a purpose."""

    key: str
    legal_basis: str
    channels: tuple[str, ...]
    lifespan_days: int | None
    reconfirm_days: int | None
    version: int
    # Grants given under an earlier version no longer count (a new recipient, or a material change).
    consent_from_version: int


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


def storage_channel(rule: Rule, channel: str | None, *, loc: list[str | int]) -> str:
    """The channel as stored for this purpose; 422 when it is missing, foreign, or given to a channel-less purpose."""
    if rule.channels:
        if channel is None:
            raise Unprocessable(f"purpose '{rule.key}' needs a channel: one of {', '.join(rule.channels)}", loc=loc)
        if channel not in rule.channels:
            raise Unprocessable(f"purpose '{rule.key}' does not cover the channel '{channel}'", loc=loc)
        return channel
    if channel is not None:
        raise Unprocessable(f"purpose '{rule.key}' has no channels; leave channel out", loc=loc)
    return NO_CHANNEL


def check_status(rule: Rule, status: str, *, loc: list[str | int]) -> None:
    """422 for a withdrawal of a purpose that is not consent-based: contract and legal obligation cannot be objected to."""
    if status == "withdrawn" and rule.legal_basis in OWN_BASIS:
        raise Unprocessable(
            f"purpose '{rule.key}' rests on {rule.legal_basis.replace('_', ' ')}, not consent: it cannot be withdrawn "
            "or objected to",
            loc=loc,
        )


def api_channel(stored: str) -> str | None:
    return None if stored == NO_CHANNEL else stored


def grant_expiry(rule: Rule, status: str, captured_at: datetime) -> datetime | None:
    """When a decision stops counting: a grant at captured_at plus the purpose's lifespan; withdrawals do not expire."""
    if status != "granted" or rule.lifespan_days is None:
        return None
    return captured_at + timedelta(days=rule.lifespan_days)


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
