"""The consent decision as a pure function, shared by every reader (asyncpg, SQLAlchemy, batch, single)."""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.errors import Unprocessable
from app.models.consents import NO_CHANNEL

CONSENT_BASED = "consent"


@dataclass(frozen=True, slots=True)
class Rule:
    """What the decision needs to know about a purpose."""

    key: str
    legal_basis: str
    channels: tuple[str, ...]
    lifespan_days: int | None
    reconfirm_days: int | None
    version: int


@dataclass(frozen=True, slots=True)
class Standing:
    """The decision that currently stands for (subject, purpose, channel)."""

    event_id: uuid.UUID
    status: str
    captured_at: datetime
    policy_version: str | None


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


def api_channel(stored: str) -> str | None:
    return None if stored == NO_CHANNEL else stored


def expires_at(rule: Rule, standing: Standing) -> datetime | None:
    """When a grant stops counting: captured_at plus the purpose's lifespan; withdrawals do not expire."""
    if standing.status != "granted" or rule.lifespan_days is None:
        return None
    return standing.captured_at + timedelta(days=rule.lifespan_days)


def _reconfirm_due(rule: Rule, standing: Standing, at: datetime) -> bool:
    if rule.reconfirm_days is None:
        return False
    return at >= standing.captured_at + timedelta(days=rule.reconfirm_days)


def is_effective(rule: Rule, standing: Standing, at: datetime) -> bool:
    """Whether the standing decision counts at `at`: a withdrawal always does, a grant until it expires."""
    if standing.status != "granted":
        return True
    expiry = expires_at(rule, standing)
    return (expiry is None or at < expiry) and not _reconfirm_due(rule, standing, at)


def decide(
    rule: Rule, *, subject_known: bool, flags: list[str], standing: Standing | None, at: datetime, suppressed: bool = False
) -> Decision:
    """May the tenant process this subject's data for this purpose at `at`? With the reason code."""
    if "erased" in flags:
        return Decision(False, "erased")
    if "restricted" in flags:
        return Decision(False, "restricted")
    if suppressed:
        return Decision(False, "suppressed")
    if not subject_known:
        return Decision(False, "unknown_subject")
    if rule.legal_basis != CONSENT_BASED:
        # Legitimate interest (and contract, legal obligation) hold until the subject objects.
        if standing is not None and standing.status == "withdrawn":
            return Decision(False, "objected")
        return Decision(True, "legitimate_interest")
    if standing is None:
        return Decision(False, "no_consent")
    if standing.status == "withdrawn":
        return Decision(False, "withdrawn")
    expiry = expires_at(rule, standing)
    if expiry is not None and at >= expiry:
        return Decision(False, "expired")
    if _reconfirm_due(rule, standing, at):
        return Decision(False, "reconsent_required")
    return Decision(True, "consent_granted")
