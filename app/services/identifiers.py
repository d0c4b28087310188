"""Identifier normalisation, the blind index (keyed HMAC) and sealing of stored values."""

import base64
import hashlib
import hmac
from functools import cached_property, lru_cache

import phonenumbers
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from email_validator import EmailNotValidError, validate_email

from app.errors import Unprocessable


class InvalidIdentifier(Unprocessable):
    """An email, phone or id that cannot be normalised."""


# Parsing an email or phone costs 50-100 us; checks ask about the same people again and again (every send,
# every channel), so recent answers are kept. Bounded: at most this many inputs, invalid ones included.
_CACHE_SIZE = 65_536


@lru_cache(maxsize=_CACHE_SIZE)
def _email(value: str) -> str | None:
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


class IdentifierKeys:
    """Keys derived from CONSENTD_IDENTIFIER_KEY: one for the blind index, one for sealing values."""

    def __init__(self, secret: str, region: str) -> None:
        self._secret = secret.encode()
        self.region = region

    def _derive(self, label: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(self._secret)

    @cached_property
    def _index_key(self) -> bytes:
        return self._derive(b"consentd blind index v1")

    @cached_property
    def _fernet(self) -> Fernet:
        return Fernet(base64.urlsafe_b64encode(self._derive(b"consentd identifier seal v1")))

    def blind_index(self, tenant: str, kind: str, normalised: str) -> str:
        """HMAC of tenant, type and value: equal identifiers match within a tenant and nowhere else."""
        message = f"{tenant}\x00{kind}\x00{normalised}".encode()
        return hmac.new(self._index_key, message, hashlib.sha256).hexdigest()

    def lookup_hash(self, tenant: str, kind: str, value: str, *, loc: tuple[str | int, ...] = ()) -> str:
        """Normalise then hash; raises InvalidIdentifier."""
        return self.blind_index(tenant, kind, normalise(kind, value, region=self.region, loc=loc))

    def seal(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def unseal(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            return "[sealed with another key]"
