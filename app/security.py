"""The only module that touches JWT and JWS: verification with an explicit algorithm allow-list, minting, and the
signing keys of receipts (the Signer, its JWKS)."""

import base64
import hashlib
import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk, jws, jwt
from jose.backends.base import Key
from jose.exceptions import JOSEError

from app.config import Settings
from app.errors import Unauthorized

SCOPES = frozenset(
    {"purposes:write", "consents:write", "consents:read", "checks:read", "audit:read", "requests:write", "admin"}
)
REQUIRED_CLAIMS = ("iss", "aud", "exp", "sub", "tenant", "scope")
NUMERIC_DATE_CLAIMS = ("exp", "iat", "nbf")
TENANT_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
ASYMMETRIC = ["RS256", "ES256"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the client (`sub`), its tenant and its scopes."""

    tenant: str
    client: str
    scopes: frozenset[str]
    expires: int

    def has(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


class UnknownKey(Unauthorized):
    """The token names a `kid` the loaded JWKS does not hold (the identity provider may have rotated)."""

    def __init__(self) -> None:
        super().__init__("token signed by an unknown key")


class TokenVerifier:
    """Verifies bearer tokens; remembers tokens it has verified until they expire (the check is hot)."""

    _CACHE_LIMIT = 10_000

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cache: dict[str, Principal] = {}
        self._jwks: dict[str, dict] = {}
        self._jwks_loaded_at = 0.0
        if settings.jwt_public_key:
            self.algorithms = ASYMMETRIC
            self._static_key: str | dict | None = settings.jwt_public_key
        elif settings.jwks_url:
            self.algorithms = ASYMMETRIC
            self._static_key = None
        else:
            self.algorithms = ["HS256"]
            self._static_key = settings.jwt_secret

    async def load_jwks(self, *, min_interval: float = 0.0) -> bool:
        """Fetch the JWKS named by CONSENTD_JWKS_URL, at most once per `min_interval` seconds; True if fetched."""
        if not self.settings.jwks_url or time.monotonic() - self._jwks_loaded_at < min_interval:
            return False
        self._jwks_loaded_at = time.monotonic()
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(self.settings.jwks_url)
            response.raise_for_status()
        document = response.json()
        keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(keys, list):
            raise ValueError("the JWKS has no list of keys")
        self._jwks = {key.get("kid", ""): key for key in keys if isinstance(key, dict)}
        return True

    async def verify_refreshing(self, token: str) -> Principal:
        """verify(), fetching the JWKS again (rate-limited) when the token names a key not yet known."""
        try:
            return self.verify(token)
        except UnknownKey:
            try:
                refreshed = await self.load_jwks(min_interval=self.settings.jwks_min_refresh_seconds)
            except (httpx.HTTPError, ValueError):
                refreshed = False
            if not refreshed:
                raise
            return self.verify(token)

    def verify(self, token: str) -> Principal:
        """Return the principal of a valid token or raise Unauthorized."""
        now = int(time.time())
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires > now:
                return cached
            del self._cache[token]
        principal = self._decode(token)
        if len(self._cache) >= self._CACHE_LIMIT:
            self._cache.clear()
        self._cache[token] = principal
        return principal

    def _key_for(self, token: str) -> str | dict:
        if self._static_key is not None:
            return self._static_key
        try:
            kid = jwt.get_unverified_header(token).get("kid", "")
        except (JOSEError, AttributeError) as exc:
            raise Unauthorized("malformed token") from exc
        key = self._jwks.get(kid)
        if key is None:
            raise UnknownKey()
        return key

    def _decode(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._key_for(token),
                algorithms=self.algorithms,
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                options={"require_" + claim: True for claim in ("iss", "aud", "exp", "sub")},
            )
        # python-jose raises TypeError on ill-typed claims, OverflowError on a time claim of Infinity.
        except (JOSEError, TypeError, ValueError, OverflowError) as exc:
            raise Unauthorized("invalid token") from exc
        missing = [claim for claim in REQUIRED_CLAIMS if claim not in claims]
        if missing:
            raise Unauthorized(f"token lacks claims: {', '.join(missing)}")
        # python-jose reads a NumericDate with int(), so it takes "9999999999" or true; RFC 7519 says a JSON number.
        if not all(_numeric_date(claims[claim]) for claim in NUMERIC_DATE_CLAIMS if claim in claims):
            raise Unauthorized("token has a time claim (exp, iat or nbf) that is not a number")
        tenant, scope, sub = claims["tenant"], claims["scope"], claims["sub"]
        if not (isinstance(tenant, str) and TENANT_KEY.match(tenant)):
            raise Unauthorized("token has an invalid tenant")
        if not isinstance(scope, str) or not isinstance(sub, str) or not sub:
            raise Unauthorized("token has an invalid scope or sub")
        return Principal(tenant=tenant, client=sub, scopes=frozenset(scope.split()), expires=int(claims["exp"]))


def _numeric_date(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def mint_token(settings: Settings, *, tenant: str, scopes: list[str], ttl: int, client: str) -> str:
    """Sign an HS256 token with CONSENTD_JWT_SECRET (used by `consentd token` and `consentd demo`)."""
    if settings.jwt_public_key or settings.jwks_url:
        raise ValueError("tokens come from your identity provider when RS256/ES256 verification is configured")
    unknown = set(scopes) - SCOPES
    if unknown:
        raise ValueError(f"unknown scopes: {', '.join(sorted(unknown))}")
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": client,
        "tenant": tenant,
        "scope": " ".join(scopes),
        "iat": now,
        "exp": now + ttl,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")



# --- Signing: receipts and audit checkpoints ------------------------------------------------------------------------

SIGNING_ALGORITHMS = ("ES256", "RS256")
DEV_SIGNING_KID = "consentd-development"
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class SigningKeyError(ValueError):
    """A signing key that cannot be used: unreadable, not a key, too weak, on the wrong curve, or not allowed here."""


class SignatureError(ValueError):
    """A token that is malformed, names no published key, or whose signature does not verify."""


def _pem(value: str, *, what: str) -> bytes:
    """The PEM `value` is, or the contents of the file it names."""
    text = value.strip()
    if text.startswith("-----BEGIN"):
        # A PEM passed through an environment variable often arrives with its newlines written as \n.
        return text.replace("\\n", "\n").encode()
    try:
        return Path(text).expanduser().read_bytes()
    except (OSError, ValueError) as exc:
        # The value is not echoed: it may be a key in a form we do not read rather than a path.
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise SigningKeyError(f"{what} is neither a PEM key nor the path of a readable PEM file ({reason})") from None


def key_algorithm(public: Any, *, what: str = "the key") -> str:
    """ES256 for an EC P-256 key, RS256 for RSA of at least 2048 bits; SigningKeyError for anything else."""
    if isinstance(public, ec.EllipticCurvePublicKey):
        if not isinstance(public.curve, ec.SECP256R1):
            raise SigningKeyError(f"{what} is an EC key on {public.curve.name}; only P-256 (ES256) is supported")
        return "ES256"
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < 2048:
            raise SigningKeyError(f"{what} is a {public.key_size}-bit RSA key; RS256 needs at least 2048 bits")
        return "RS256"
    raise SigningKeyError(f"{what} is a {type(public).__name__}; use an EC P-256 key or an RSA key of 2048 bits or more")


def load_signing_key(value: str, *, what: str = "CONSENTD_SIGNING_KEY") -> PrivateKey:
    """The private key a PEM (or the file it names) holds, checked to be usable for ES256 or RS256."""
    pem = _pem(value, what=what)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SigningKeyError(f"{what} is not an unencrypted PEM private key") from None
    key_algorithm(key.public_key(), what=what)
    return key  # type: ignore[return-value]  # key_algorithm admitted only EC and RSA keys


def load_verification_key(path: str) -> PublicKey:
    """The public key of a PEM file holding a public or a private key (a retired signing key)."""
    what = f"the retired signing key {path!r}"
    pem = _pem(path, what=what)
    try:
        key: Any = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        try:
            key = serialization.load_pem_private_key(pem, password=None).public_key()
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise SigningKeyError(f"{what} is not a PEM public or unencrypted private key") from None
    key_algorithm(key, what=what)
    return key


def development_key() -> ec.EllipticCurvePrivateKey:
    """The development signing key: derived from a published constant, so nothing secret is committed, and
    anyone can forge with it, which is why production refuses it."""
    seed = int.from_bytes(hashlib.sha256(b"consentd-development-signing-key").digest(), "big")
    return ec.derive_private_key(seed % _P256_ORDER, ec.SECP256R1())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64_int(value: int, length: int = 0) -> str:
    return _b64(value.to_bytes(length or max(1, (value.bit_length() + 7) // 8), "big"))


def public_jwk(public: PublicKey) -> dict[str, str]:
    """The required members of the key's public JWK (RFC 7518), which are also what its thumbprint hashes."""
    if isinstance(public, ec.EllipticCurvePublicKey):
        point = public.public_numbers()
        return {"crv": "P-256", "kty": "EC", "x": _b64_int(point.x, 32), "y": _b64_int(point.y, 32)}
    numbers = public.public_numbers()
    return {"e": _b64_int(numbers.e), "kty": "RSA", "n": _b64_int(numbers.n)}


def thumbprint(public: PublicKey) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url): a `kid` that names the key itself."""
    canonical = json.dumps(public_jwk(public), separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode()).digest())


def _verify(token: str, key_for: Any, typ: str | None) -> dict[str, Any]:
    """The JSON payload of `token`, verified with the key `key_for(kid)` returns as (alg, key) (or None)."""
    try:
        header = jws.get_unverified_header(token)
    except (JOSEError, AttributeError, TypeError, ValueError):
        raise SignatureError("malformed token") from None
    kid = header.get("kid")
    found = key_for(kid) if isinstance(kid, str) else None
    if found is None:
        raise SignatureError(f"the token names no published key (kid {kid!r})")
    alg, key = found
    # The key fixes the algorithm: a token cannot pick a weaker one, or HS256 with the public key as secret.
    if header.get("alg") != alg or alg not in SIGNING_ALGORITHMS:
        raise SignatureError(f"the token's algorithm {header.get('alg')!r} is not the key's ({alg})")
    if typ is not None and header.get("typ") != typ:
        raise SignatureError(f"the token is a {header.get('typ')!r}, not a {typ!r}")
    try:
        payload = json.loads(jws.verify(token, key, algorithms=[alg]))
    except (JOSEError, ValueError):
        raise SignatureError("the signature does not verify") from None
    if not isinstance(payload, dict):
        raise SignatureError("the token's payload is not a JSON object")
    return payload


def verify_with_jwks(token: str, jwks_document: Mapping[str, Any], *, typ: str | None = None) -> dict[str, Any]:
    """Verify a token offline with nothing but a JWKS document (GET /.well-known/jwks.json); its payload."""

    def key_for(kid: str) -> tuple[str, Key] | None:
        for entry in jwks_document.get("keys", ()):
            if isinstance(entry, Mapping) and entry.get("kid") == kid:
                alg = entry.get("alg") or {"EC": "ES256", "RSA": "RS256"}.get(entry.get("kty", ""))
                if alg not in SIGNING_ALGORITHMS:
                    return None
                try:
                    return alg, jwk.construct(dict(entry), alg)
                except JOSEError:
                    raise SignatureError(f"the JWKS holds an unusable key {kid!r}") from None
        return None

    return _verify(token, key_for, typ)


class Signer:
    """Signs with the active key; publishes, and verifies with, the active key and every retired one."""

    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.jwt_issuer
        self._production = settings.env == "production"
        self.development = settings.signing_key is None
        if settings.signing_key is None:
            private: PrivateKey = development_key()
            self.kid = DEV_SIGNING_KID
        else:
            private = load_signing_key(settings.signing_key)
            self.kid = settings.signing_key_id or thumbprint(private.public_key())
        self.alg = key_algorithm(private.public_key())
        # Prepared once: constructing a python-jose key from a PEM per signature would cost more than signing.
        self._signing_key = jwk.construct(private, self.alg)
        self._keys: dict[str, tuple[str, Key]] = {}
        self._published: list[dict[str, str]] = []
        self._publish(private.public_key(), self.kid)
        for path in settings.signing_keys_retired:
            public = load_verification_key(path)
            self._publish(public, thumbprint(public))

    def _publish(self, public: PublicKey, kid: str) -> None:
        if kid in self._keys:  # the active key listed as retired too, or a retired key listed twice
            return
        alg = key_algorithm(public)
        self._keys[kid] = (alg, jwk.construct(public, alg))
        self._published.append({**public_jwk(public), "kid": kid, "alg": alg, "use": "sig"})

    def sign(self, payload: dict[str, Any], *, typ: str) -> str:
        """A compact JWS over `payload` as JSON (datetimes in UTC with Z, UUIDs as strings), header kid/alg/typ."""
        if self.development and self._production:
            raise SigningKeyError("refusing to sign with the development key in production: set CONSENTD_SIGNING_KEY")
        # The same encoding as the API's JSON answers, so a signed answer and the answer itself read the same.
        body = orjson.dumps(payload, default=str, option=orjson.OPT_UTC_Z)
        return jws.sign(body, self._signing_key, headers={"kid": self.kid, "typ": typ}, algorithm=self.alg)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public keys, active first, each with kid, alg and use "sig"."""
        return {"keys": [dict(key) for key in self._published]}

    def verify(self, token: str, *, typ: str | None = None) -> dict[str, Any]:
        """The payload of a token signed by one of the published keys (named by its kid); SignatureError otherwise."""
        return _verify(token, self._keys.get, typ)
