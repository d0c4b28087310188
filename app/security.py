"""The only module that touches JWT: verification with an explicit algorithm allow-list, and minting."""

import re
import time
import uuid
from dataclasses import dataclass

import httpx
from jose import jwt
from jose.exceptions import JOSEError

from app.config import Settings
from app.errors import Unauthorized

SCOPES = frozenset(
    {"purposes:write", "consents:write", "consents:read", "checks:read", "audit:read", "requests:write", "admin"}
)
REQUIRED_CLAIMS = ("iss", "aud", "exp", "sub", "tenant", "scope")
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
        except (JOSEError, TypeError, ValueError) as exc:  # python-jose raises TypeError on ill-typed claims
            raise Unauthorized("invalid token") from exc
        missing = [claim for claim in REQUIRED_CLAIMS if claim not in claims]
        if missing:
            raise Unauthorized(f"token lacks claims: {', '.join(missing)}")
        tenant, scope, sub = claims["tenant"], claims["scope"], claims["sub"]
        if not (isinstance(tenant, str) and TENANT_KEY.match(tenant)):
            raise Unauthorized("token has an invalid tenant")
        if not isinstance(scope, str) or not isinstance(sub, str) or not sub:
            raise Unauthorized("token has an invalid scope or sub")
        return Principal(tenant=tenant, client=sub, scopes=frozenset(scope.split()), expires=int(claims["exp"]))


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

