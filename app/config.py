"""Settings read from the environment (CONSENTD_*)."""

import ipaddress
from functools import lru_cache
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

# Public development defaults, refused in production (Settings._refuse_default_secrets_in_production).
DEV_JWT_SECRET = "consentd-development-jwt-secret-change-me"  # noqa: S105
DEV_IDENTIFIER_KEY = "consentd-development-identifier-key-change-me"
ENV_PREFIX = "CONSENTD_"


class ConfigError(Exception):
    """The environment does not configure a usable service: one line per problem, each naming its variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    env: Literal["development", "production", "test"] = "development"
    database_url: str = "sqlite+aiosqlite:///./consentd.db"
    jwt_secret: str = DEV_JWT_SECRET
    jwt_public_key: str | None = None
    jwks_url: str | None = None
    # An unknown `kid` fetches the JWKS again, at most this often (seconds).
    jwks_min_refresh_seconds: float = 10.0
    jwt_issuer: str = "consentd"
    jwt_audience: str = "consentd"
    identifier_key: str = DEV_IDENTIFIER_KEY
    default_region: str = "GB"
    # Bank holidays for the statutory clock of data-subject requests: a country, optionally -subdivision.
    holidays_region: str = "GB-ENG"
    # Upper bound on a request body; the batch check route has its own, larger one.
    max_body_bytes: int = 1_048_576
    max_batch_body_bytes: int = 8_388_608
    # Streaming checks (POST /v1/checks/stream): lines per request, bytes per line, bytes in all.
    stream_max_lines: int = 5_000_000
    stream_max_line_bytes: int = 4_096
    stream_max_body_bytes: int = 1_073_741_824
    # Imports (POST /v1/consents/import): bytes and lines per request.
    import_max_body_bytes: int = 33_554_432
    import_max_lines: int = 50_000
    # The cookie banner's public endpoints: request rates ("N/second|minute|hour", per server process) and body size.
    public_rate_per_ip: str = "120/minute"
    public_rate_per_key: str = "6000/minute"
    public_max_body_bytes: int = 4_096
    # Seconds a publishable key is remembered: a revoked key stops working within this.
    banner_key_cache_seconds: float = 5.0
    db_pool_size: int = 10
    # Seconds a database call may take before a request fails closed with 503.
    db_timeout: float = 5.0
    # The key that signs receipts and audit checkpoints: a PEM private key, or the path of a PEM file; EC P-256
    # (ES256) or RSA of 2048 bits or more (RS256). Unset: a development key anyone can derive, refused in production.
    signing_key: str | None = Field(default=None, repr=False)
    # The signing key's `kid`; default its RFC 7638 thumbprint. Keep the default if you will rotate: a retired key
    # is published under its thumbprint, and a receipt names the key that signed it by `kid`.
    signing_key_id: str | None = Field(default=None, min_length=1, max_length=200)
    # PEM files (public or private keys) rotated out: no longer used to sign, still published so old receipts verify.
    # Comma-separated in CONSENTD_SIGNING_KEYS_RETIRED.
    signing_keys_retired: Annotated[list[str], NoDecode] = []
    # The proxies (load balancers) whose X-Forwarded-For is believed: comma-separated addresses or networks, or "*".
    # A request's address (rate limits, evidence) is the right-most one in X-Forwarded-For that is not among them.
    forwarded_allow_ips: str = "127.0.0.1"
    # When set, GET /metrics answers only requests bearing it (`Authorization: Bearer ...`).
    metrics_token: str | None = Field(default=None, repr=False)
    # When set (redis://, rediss:// or unix://), the public endpoints' rate limits are kept in Redis, shared by
    # every worker and replica; unset, each process counts on its own. Hidden from repr: it may hold a password.
    redis_url: str | None = Field(default=None, repr=False)
    # Webhook receivers consentd calls although they are not https on a public address (a local receiver): hosts or
    # addresses, comma-separated (CONSENTD_WEBHOOK_ALLOW_HOSTS, e.g. "127.0.0.1"). They may use http too.
    webhook_allow_hosts: Annotated[list[str], NoDecode] = []
    # At most this many deliveries in flight per endpoint, and the seconds one may take.
    webhook_concurrency: int = Field(default=4, ge=1, le=64)
    webhook_timeout: float = Field(default=15.0, gt=0, le=60)
    # Whether `consentd serve` runs the scheduled work (webhook delivery) in its processes; `consentd jobs run`
    # runs it once from the shell either way.
    jobs: bool = True

    @model_validator(mode="after")
    def _refuse_default_secrets_in_production(self) -> "Settings":
        if self.env == "production":
            uses_hs256 = not (self.jwt_public_key or self.jwks_url)
            if uses_hs256 and self.jwt_secret == DEV_JWT_SECRET:
                raise ValueError("CONSENTD_JWT_SECRET must be set in production")
            if uses_hs256 and len(self.jwt_secret) < 32:
                raise ValueError("CONSENTD_JWT_SECRET must be at least 32 characters")
            if self.identifier_key == DEV_IDENTIFIER_KEY:
                raise ValueError("CONSENTD_IDENTIFIER_KEY must be set in production")
            if self.signing_key is None:
                # Anyone can derive the development key: receipts signed with it would prove nothing.
                raise ValueError("CONSENTD_SIGNING_KEY must be set in production")
        return self

    @field_validator("signing_key", "redis_url", mode="before")
    @classmethod
    def _unset_when_blank(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("signing_keys_retired", "webhook_allow_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [path.strip() for path in value.split(",") if path.strip()]
        return value

    @model_validator(mode="after")
    def _signing_keys_load(self) -> "Settings":
        # A bad key stops the service at start-up, not at the first receipt. security.py imports this module, hence
        # the import here.
        from app.security import load_signing_key, load_verification_key

        if self.signing_key is not None:
            load_signing_key(self.signing_key)
        for path in self.signing_keys_retired:
            try:
                load_verification_key(path)
            except ValueError as exc:
                raise ValueError(f"CONSENTD_SIGNING_KEYS_RETIRED: {exc}") from None
        return self

    @field_validator("holidays_region")
    @classmethod
    def _holidays_region(cls, value: str) -> str:
        import holidays

        country, _, subdivision = value.partition("-")
        try:
            holidays.country_holidays(country, subdiv=subdivision or None)
        except NotImplementedError:
            raise ValueError(f"unknown holidays region {value!r}: a country code, optionally -subdivision (GB-ENG)") from None
        return value

    @field_validator("public_rate_per_ip", "public_rate_per_key")
    @classmethod
    def _rate(cls, value: str) -> str:
        from limits import parse

        parse(value)  # ValueError for anything that is not a rate
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from redis.connection import parse_url  # the client's own reading: scheme, port, db, query

        # The message never repeats the value: it may hold a password.
        problem = ValueError("must be a URL redis://host:port/db, rediss://host:port/db or unix:///path/to/socket")
        try:
            parsed = parse_url(value)
        except ValueError:
            raise problem from None
        database = urlsplit(value).path.strip("/") if not value.startswith("unix:") else ""
        if not (parsed.get("host") or parsed.get("path")) or not (database.isdigit() or not database):
            raise problem  # the client would ignore a database that is not a number, and use 0
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, value: str) -> str:
        return trusted_proxies(value, what="CONSENTD_FORWARDED_ALLOW_IPS")

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")


def trusted_proxies(value: str, *, what: str) -> str:
    """`value` when it is "*" or a comma-separated list (empty: no proxy) of IP addresses and networks, as uvicorn
    reads them: it takes anything else, 10.0.0.1/8 included, as a name that never matches, so that a typo would
    silently trust no proxy."""
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    if entries == ["*"]:
        return value
    for entry in entries:
        try:
            ipaddress.ip_network(entry) if "/" in entry else ipaddress.ip_address(entry)
        except ValueError:
            raise ValueError(f"{what} holds {entry!r}, which is not an IP address or network (e.g. 10.0.0.0/8)") from None
    return value


def _problems(error: ValidationError) -> list[str]:
    """Pydantic's errors as lines a person can act on: the environment variable, then what is wrong with it.

    Values are never repeated: a bad one may be a secret."""
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        message = item["msg"].removeprefix("Value error, ")
        field = item["loc"][0] if item["loc"] else None
        # Errors of the whole model (production checks, keys) already name their variable.
        problems.append(f"{ENV_PREFIX}{str(field).upper()}: {message}" if field is not None else message)
    return problems


@lru_cache
def get_settings() -> Settings:
    """The settings of this process, read once; ConfigError when a CONSENTD_* variable is missing or unusable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from None
    except SettingsError as exc:  # a value pydantic-settings could not even decode
        raise ConfigError([str(exc)]) from None
