"""Identifier normalisation, the blind index and sealing."""

import hashlib
import hmac
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.models.banners import DEVICE_ID
from app.services.subjects.identifiers import ISSUED_DEVICE_ID, IdentifierKeys, InvalidIdentifier, normalise

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


@given(st.text(max_size=20), st.sampled_from(["email", "phone", "external_id", "device_id"]), st.text(max_size=300))
def test_blind_index_is_hmac_sha256(tenant, kind, value):
    """blind_index copies one keyed HMAC for each value: the same hex digest as a new hmac.new each time."""
    keys = IdentifierKeys("another-secret-of-enough-length-0123456789", "GB")
    message = f"{tenant}\x00{kind}\x00{value}".encode()
    assert keys.blind_index(tenant, kind, value) == hmac.new(keys._index_key, message, hashlib.sha256).hexdigest()


def test_seal_round_trip():
    sealed = KEYS.seal("+447911123456")
    assert "7911" not in sealed
    assert KEYS.unseal(sealed) == "+447911123456"
    assert IdentifierKeys("other" * 8, "GB").unseal(sealed) == "[sealed with another key]"


tenants = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=64)


@given(tenant=tenants, random_part=st.binary(min_size=16, max_size=16))
def test_issued_device_ids_always_verify_and_fit_the_pattern(tenant, random_part):
    device_id = KEYS.device_id(tenant, random_part)
    assert re.fullmatch(DEVICE_ID, device_id) and re.fullmatch(ISSUED_DEVICE_ID, device_id)
    assert KEYS.issued_device_id(tenant, device_id)
    assert not KEYS.issued_device_id(tenant + "x", device_id)  # bound to the tenant
    assert not IdentifierKeys("other" * 8, "GB").issued_device_id(tenant, device_id)  # and to the key


@given(tenant=tenants, value=st.from_regex(DEVICE_ID, fullmatch=True))
def test_anything_not_issued_is_refused(tenant, value):
    assert not KEYS.issued_device_id(tenant, value)


@given(random_part=st.binary(min_size=16, max_size=16), at=st.integers(min_value=0, max_value=47), data=st.data())
def test_any_changed_character_is_refused(random_part, at, data):
    device_id = KEYS.device_id("t1", random_part)
    other = data.draw(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))
    changed = device_id[:at] + other + device_id[at + 1 :]
    assert KEYS.issued_device_id("t1", changed) == (changed == device_id)


def test_new_device_ids_are_fresh():
    ids = {KEYS.new_device_id("t1") for _ in range(1000)}
    assert len(ids) == 1000 and all(KEYS.issued_device_id("t1", i) for i in ids)
