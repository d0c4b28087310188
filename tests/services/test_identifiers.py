"""Identifier normalisation, the blind index and sealing."""

import pytest

from app.services.identifiers import IdentifierKeys, InvalidIdentifier, normalise

KEYS = IdentifierKeys("k" * 40, "GB")


@pytest.mark.parametrize(
    ("kind", "raw", "normal"),
    [
        ("email", "  Jane.Doe@Example.COM ", "jane.doe@example.com"),
        ("phone", "07911 123456", "+447911123456"),
        ("phone", "+44 (0)7911-123456", "+447911123456"),
        ("phone", "+1 415 555 2671", "+14155552671"),
        ("external_id", " C-1001 ", "C-1001"),
        ("device_id", "abc", "abc"),
    ],
)
def test_normalise(kind, raw, normal):
    assert normalise(kind, raw, region="GB") == normal


@pytest.mark.parametrize(
    ("kind", "raw"),
    [("email", "nope"), ("email", "a@b"), ("email", "a@@example.com"), ("phone", "12"), ("phone", "call me"),
     ("phone", "+44 1234"), ("external_id", "   ")],
)
def test_invalid(kind, raw):
    with pytest.raises(InvalidIdentifier):
        normalise(kind, raw, region="GB")


def test_blind_index_is_keyed_per_tenant_and_type():
    a = KEYS.lookup_hash("t1", "email", "Jane@example.com")
    assert a == KEYS.lookup_hash("t1", "email", "jane@example.com ")
    assert a != KEYS.lookup_hash("t2", "email", "jane@example.com")
    assert a != KEYS.lookup_hash("t1", "external_id", "jane@example.com")
    assert a != IdentifierKeys("other" * 8, "GB").lookup_hash("t1", "email", "jane@example.com")
    assert "jane" not in a


def test_seal_round_trip():
    sealed = KEYS.seal("+447911123456")
    assert "7911" not in sealed
    assert KEYS.unseal(sealed) == "+447911123456"
    assert IdentifierKeys("other" * 8, "GB").unseal(sealed) == "[sealed with another key]"
