"""Identifier normalisation, the blind index (keyed HMAC) and sealing of stored values."""

import base64
import hashlib
import hmac
import os
import re
import secrets
from functools import cached_property, lru_cache

import email_validator
import phonenumbers
from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import EMAIL_MAX_LENGTH, LOCAL_PART_MAX_LENGTH

from app.errors import Unprocessable


class InvalidIdentifier(Unprocessable):
    """An email, phone or id that cannot be normalised."""


# Parsing an email or phone costs 50-100 us; checks ask about the same people again and again (every send,
# every channel), so recent answers are kept. Bounded: at most this many inputs, invalid ones included.
_CACHE_SIZE = 65_536


# The address almost every list is made of: an ASCII dot-atom local part (RFC 5322 atext, as email-validator's
# DOT_ATOM_TEXT), one @, and a host name of letters, digits and inner hyphens whose labels fit in 63 characters
# and whose last label ends in a letter. For these email-validator changes nothing but the case of the domain
# (UTS-46 maps A-Z to a-z), and the result is lower-cased anyway; it costs 20 us an address, this 1. No
# re.IGNORECASE (it would let the Kelvin sign match k) and no \d (any Unicode digit).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_EMAIL = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*@(?:{_LABEL}\.)+(?:[A-Za-z0-9][A-Za-z0-9-]{{0,61}})?[A-Za-z]")


def _plain_email(value: str) -> str | None:
    """The normal form of a plain ASCII address, exactly as email-validator gives it; None: ask email-validator.

    None is not "invalid": anything this does not positively recognise (a quoted or too long address, a local
    part past 64 characters, Punycode or another "--" label, IP literals, a special-use domain, any non-ASCII
    character) goes to the library. tests/services/test_email_fastpath.py holds the two side by side.
    """
    if len(value) > EMAIL_MAX_LENGTH or not value.isascii() or not _PLAIN_EMAIL.fullmatch(value):
        return None
    normal = value.lower()
    at = normal.index("@")
    domain = normal[at + 1 :]
    if at > LOCAL_PART_MAX_LENGTH:  # accepted unless the library is made strict: it decides
        return None
    if "--" in domain:  # R-LDH labels ("ab--c") are refused and "xn--" is IDNA: the library decides
        return None
    if ("." + domain).endswith(_special_suffixes()):
        return None
    return normal


_special: tuple[list[str], tuple[str, ...]] = ([], ())


def _special_suffixes() -> tuple[str, ...]:
    """"." before each of email-validator's special-use domains, rebuilt when the library's list changes (callers
    may change it): one endswith instead of a loop over the list, for every address."""
    global _special
    names = email_validator.SPECIAL_USE_DOMAIN_NAMES
    if names != _special[0]:
        _special = (list(names), tuple("." + name for name in names))
    return _special[1]


@lru_cache(maxsize=_CACHE_SIZE)
def _email(value: str) -> str | None:
    plain = _plain_email(value)
    if plain is not None:
        return plain
    return _validated_email(value)


def _validated_email(value: str) -> str | None:
    try:
        return validate_email(value, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


@lru_cache(maxsize=_CACHE_SIZE)
def _phone(value: str, region: str) -> str | None:
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise(kind: str, value: str, *, region: str, loc: tuple[str | int, ...] = ()) -> str:
    """The canonical form of an identifier: emails lower-cased, phones E.164, ids trimmed.

    `loc` is where the value sat in the request, for the 422's `errors`.
    """
    value = value.strip()
    if kind == "email":
        normal = _email(value)
    elif kind == "phone":
        normal = _phone(value, region)
    else:
        normal = value or None
    if normal is None:
        raise InvalidIdentifier(f"invalid {kind}", loc=[*loc, kind])
    return normal


# A device id consentd issues: this prefix (a version, should the format change), then a random part and a MAC
# over (tenant, random part), each base64url of 16 bytes without padding. It fits DEVICE_ID (app/models/banners.py).
DEVICE_PREFIX = "cd1_"
_DEVICE_PART = 16  # bytes: 128 bits, unguessable, and 128 bits of MAC
_DEVICE_PART_CHARS = 22
ISSUED_DEVICE_ID = rf"^{DEVICE_PREFIX}[A-Za-z0-9_-]{{{2 * _DEVICE_PART_CHARS}}}$"


# Sealed values: AES-256-GCM (a Fernet token, what was written before, costs 20 us a value against 3: an import
# seals a million). Fernet tokens are base64url, which has no ".", so the prefix tells the two apart.
SEALED_V2 = "s2."
_NONCE = 12


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class IdentifierKeys:
    """Keys derived from CONSENTD_IDENTIFIER_KEY: the blind index, sealing values, and signing device ids."""

    def __init__(self, secret: str, region: str) -> None:
        self._secret = secret.encode()
        self.region = region

    def _derive(self, label: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(self._secret)

    @cached_property
    def _index_key(self) -> bytes:
        return self._derive(b"consentd blind index v1")

    @cached_property
    def _index_hmac(self) -> "hmac.HMAC":
        """HMAC-SHA256 keyed for blind indexes, copied for each one (spares hmac.new's key setup every time)."""
        return hmac.new(self._index_key, digestmod=hashlib.sha256)

    @cached_property
    def _fernet(self) -> Fernet:
        """What values were sealed with before SEALED_V2: read, never written."""
        return Fernet(base64.urlsafe_b64encode(self._derive(b"consentd identifier seal v1")))

    @cached_property
    def _aead(self) -> AESGCM:
        return AESGCM(self._derive(b"consentd identifier seal v2"))

    @cached_property
    def _device_key(self) -> bytes:
        return self._derive(b"consentd device id v1")

    def device_id(self, tenant: str, random_part: bytes) -> str:
        """The device id for this random part, its MAC binding it to the tenant (deterministic: see new_device_id)."""
        if len(random_part) != _DEVICE_PART:
            raise ValueError(f"a device id's random part is {_DEVICE_PART} bytes")
        message = DEVICE_PREFIX.encode() + tenant.encode() + b"\x00" + random_part
        mac = hmac.new(self._device_key, message, hashlib.sha256).digest()[:_DEVICE_PART]
        return DEVICE_PREFIX + _b64(random_part) + _b64(mac)

    def new_device_id(self, tenant: str) -> str:
        """A fresh device id for a browser of this tenant."""
        return self.device_id(tenant, secrets.token_bytes(_DEVICE_PART))

    def issued_device_id(self, tenant: str, value: str) -> bool:
        """Whether consentd issued this device id for this tenant (its MAC checks out)."""
        if len(value) != len(DEVICE_PREFIX) + 2 * _DEVICE_PART_CHARS or not value.startswith(DEVICE_PREFIX):
            return False
        encoded = value[len(DEVICE_PREFIX) : len(DEVICE_PREFIX) + _DEVICE_PART_CHARS]
        try:
            random_part = base64.urlsafe_b64decode(encoded + "==")
        except ValueError:
            return False
        if len(random_part) != _DEVICE_PART:
            return False
        # The whole id is compared, not only the MAC: a second spelling of the same bytes (base64's unused
        # low bits) would be another blind index, so another device, under one valid MAC.
        return hmac.compare_digest(self.device_id(tenant, random_part).encode(), value.encode())

    def blind_index(self, tenant: str, kind: str, normalised: str) -> str:
        """HMAC of tenant, type and value: equal identifiers match within a tenant and nowhere else."""
        keyed = self._index_hmac.copy()
        keyed.update(f"{tenant}\x00{kind}\x00{normalised}".encode())
        return keyed.hexdigest()

    def lookup_hash(self, tenant: str, kind: str, value: str, *, loc: tuple[str | int, ...] = ()) -> str:
        """Normalise then hash; raises InvalidIdentifier."""
        return self.blind_index(tenant, kind, normalise(kind, value, region=self.region, loc=loc))

    def seal(self, value: str) -> str:
        """SEALED_V2, then base64url of a random 96-bit nonce and the AES-256-GCM ciphertext and tag."""
        nonce = os.urandom(_NONCE)
        return SEALED_V2 + _b64(nonce + self._aead.encrypt(nonce, value.encode(), None))

    def unseal(self, sealed: str) -> str:
        """The value of `seal`, or of the Fernet token it wrote before SEALED_V2 (still stored)."""
        try:
            if sealed.startswith(SEALED_V2):
                raw = base64.urlsafe_b64decode(sealed[len(SEALED_V2) :] + "==")
                return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], None).decode()
            return self._fernet.decrypt(sealed.encode()).decode()
        except (InvalidTag, InvalidToken, ValueError):
            return "[sealed with another key]"
