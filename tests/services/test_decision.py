"""The decision as a pure function."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.errors import Unprocessable
from app.services.decision import Rule, Standing, decide, expires_at, is_effective, storage_channel

NOW = datetime(2026, 11, 22, tzinfo=UTC)
MARKETING = Rule("marketing", "consent", ("email", "sms"), 365, None, 1)
SENSITIVE = Rule("sensitive_data", "consent", (), None, 180, 1)
PROFILING = Rule("profiling", "legitimate_interest", (), None, None, 1)


def standing(status: str, days_ago: float) -> Standing:
    return Standing(uuid.uuid4(), status, NOW - timedelta(days=days_ago), "v1")


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
    ],
)
def test_decide(rule, state, flags, known, expected):
    decision = decide(rule, subject_known=known, flags=flags, standing=state, at=NOW)
    assert (decision.allowed, decision.reason) == expected


def test_suppression_wins_over_consent_and_unknown_subjects():
    assert decide(MARKETING, subject_known=True, flags=[], standing=standing("granted", 1), at=NOW, suppressed=True).reason == "suppressed"
    assert decide(MARKETING, subject_known=False, flags=[], standing=None, at=NOW, suppressed=True).reason == "suppressed"


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
