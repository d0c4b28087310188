"""The decision as a pure function."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.errors import Unprocessable
from app.services.checks.decision import Standing, decide, expires_at, is_effective
from app.services.purposes.rules import Rule, check_status, storage_channel

NOW = datetime(2026, 11, 22, tzinfo=UTC)
MARKETING = Rule("marketing", "consent", ("email", "sms"), 365, None, 1, 1)
SENSITIVE = Rule("sensitive_data", "consent", (), None, 180, 1, 1)
PROFILING = Rule("profiling", "legitimate_interest", (), None, None, 1, 1)
ORDERS = Rule("order_updates", "contract", ("email", "phone"), None, None, 1, 1)
RECORDS = Rule("legal_records", "legal_obligation", (), None, None, 1, 1)
# Version 3 of a sharing purpose whose recipient changed at version 3: grants under 1 and 2 no longer count.
SHARING = Rule("share_acme", "consent", (), None, None, 3, 3)


def standing(status: str, days_ago: float, purpose_version: int = 1) -> Standing:
    return Standing(uuid.uuid4(), status, NOW - timedelta(days=days_ago), "v1", purpose_version)


@pytest.mark.parametrize(
    ("rule", "state", "flags", "known", "expected"),
    [
        (MARKETING, standing("granted", 1), [], True, (True, "consent_granted")),
        (MARKETING, standing("granted", 364.9), [], True, (True, "consent_granted")),
        (MARKETING, standing("granted", 365), [], True, (False, "expired")),
        (MARKETING, standing("withdrawn", 400), [], True, (False, "withdrawn")),
        (MARKETING, None, [], True, (False, "no_consent")),
        (MARKETING, None, [], False, (False, "unknown_subject")),
        (MARKETING, standing("granted", 1), ["restricted"], True, (False, "restricted")),
        (MARKETING, standing("granted", 1), ["erased", "restricted"], True, (False, "erased")),
        (SENSITIVE, standing("granted", 179), [], True, (True, "consent_granted")),
        (SENSITIVE, standing("granted", 180), [], True, (False, "reconsent_required")),
        (PROFILING, None, [], True, (True, "legitimate_interest")),
        (PROFILING, standing("granted", 5000), [], True, (True, "legitimate_interest")),
        (PROFILING, standing("withdrawn", 1), [], True, (False, "objected")),
        (PROFILING, None, [], False, (False, "unknown_subject")),
        (PROFILING, None, ["erased"], True, (False, "erased")),
        # Contract and legal obligation answer on their own basis: flags, unknown subjects and old objections aside.
        (ORDERS, None, [], True, (True, "contract")),
        (ORDERS, None, [], False, (True, "contract")),
        (ORDERS, standing("withdrawn", 1), ["restricted"], True, (True, "contract")),
        (RECORDS, None, ["erased"], True, (True, "legal_obligation")),
        (SHARING, standing("granted", 1, purpose_version=2), [], True, (False, "reconsent_required")),
        (SHARING, standing("granted", 1, purpose_version=3), [], True, (True, "consent_granted")),
        (SHARING, standing("withdrawn", 1, purpose_version=1), [], True, (False, "withdrawn")),
    ],
)
def test_decide(rule, state, flags, known, expected):
    decision = decide(rule, subject_known=known, flags=flags, standing=state, at=NOW)
    assert (decision.allowed, decision.reason) == expected


def test_suppression_wins_over_consent_and_unknown_subjects():
    assert decide(MARKETING, subject_known=True, flags=[], standing=standing("granted", 1), at=NOW, suppressed=True).reason == "suppressed"
    assert decide(MARKETING, subject_known=False, flags=[], standing=None, at=NOW, suppressed=True).reason == "suppressed"


def test_suppression_does_not_reach_contract_or_legal_obligation():
    """A TPS entry does not stop a call about an order."""
    assert decide(ORDERS, subject_known=True, flags=[], standing=None, at=NOW, suppressed=True).reason == "contract"
    assert decide(RECORDS, subject_known=True, flags=[], standing=None, at=NOW, suppressed=True).allowed


def test_only_consent_and_legitimate_interest_can_be_withdrawn():
    for rule in (MARKETING, PROFILING):
        check_status(rule, "withdrawn", loc=[])
    for rule in (ORDERS, RECORDS):
        check_status(rule, "granted", loc=[])
        with pytest.raises(Unprocessable):
            check_status(rule, "withdrawn", loc=[])


def test_an_outdated_grant_is_not_effective():
    assert not is_effective(SHARING, standing("granted", 1, purpose_version=2), NOW)
    assert is_effective(SHARING, standing("granted", 1, purpose_version=3), NOW)


def test_expiry_and_effect():
    grant = standing("granted", 10)
    assert expires_at(MARKETING, grant) == grant.captured_at + timedelta(days=365)
    assert expires_at(MARKETING, standing("withdrawn", 10)) is None
    assert expires_at(PROFILING, grant) is None
    assert is_effective(MARKETING, grant, NOW)
    assert not is_effective(MARKETING, grant, NOW + timedelta(days=400))
    assert is_effective(MARKETING, standing("withdrawn", 1000), NOW)


def test_channels():
    assert storage_channel(MARKETING, "sms", loc=[]) == "sms"
    assert storage_channel(PROFILING, None, loc=[]) == ""
    for rule, channel in ((MARKETING, None), (MARKETING, "post"), (PROFILING, "email")):
        with pytest.raises(Unprocessable):
            storage_channel(rule, channel, loc=[])
