"""A purpose as the decision sees it (Rule), and the rules of its channels, statuses and lifespan."""

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
