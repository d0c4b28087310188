"""Typed dependencies: what the lifespan built, the database session, the calling principal, scope requirements.

Every dependency is `async def`: FastAPI runs a plain `def` one in a worker thread, a costly hop on the hot path.
"""

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, TypeVar
from urllib.parse import urlsplit

from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.applications import Starlette

from app.config import Settings
from app.db import Database
from app.errors import Forbidden, Unauthorized
from app.security import SCOPES, Principal, Signer, TokenVerifier
from app.services.access import AccessLog
from app.services.banner import KeyDirectory, KeyGrant, Throttle, ViewCache, normalise_origin
from app.services.checks import Checker
from app.services.notifications import Sender
from app.services.purposes import RuleCache
from app.services.subjects import IdentifierKeys
from app.services.tenants import TenantDirectory

M = TypeVar("M", bound=BaseModel)

_bearer = HTTPBearer(auto_error=False, description="A JWT with the claims iss, aud, exp, sub, tenant, scope")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


@dataclass(frozen=True)
class Services:
    """What the lifespan builds once per process (main.py) and every request shares. It lives here, below main and
    the routers, so that both may name it (the layers in pyproject.toml)."""

    database: Database
    verifier: TokenVerifier
    signer: Signer
    identifier_keys: IdentifierKeys
    checker: Checker
    access_log: AccessLog
    rule_cache: RuleCache
    tenants: TenantDirectory
    banner_keys: KeyDirectory
    banner_views: ViewCache
    throttle: Throttle
    # How webhook deliveries are sent (the keys that unseal secrets, the receivers allowed on loopback, the limits).
    sender: Sender


def install(app: Starlette, built: Services) -> None:
    """Keep the record on the app, as its one attribute of app.state besides the settings."""
    app.state.services = built


def services_of(app: Starlette) -> Services:
    """The record the lifespan installed (AttributeError before it has run)."""
    return app.state.services


def services(request: Request) -> Services:
    return services_of(request.app)


def app_settings(request: Request) -> Settings:
    """The app's settings, there from create_app on (before the lifespan runs)."""
    return request.app.state.settings


async def get_database(request: Request) -> Database:
    return services(request).database


async def get_identifier_keys(request: Request) -> IdentifierKeys:
    return services(request).identifier_keys


async def get_rule_cache(request: Request) -> RuleCache:
    return services(request).rule_cache


async def get_checker(request: Request) -> Checker:
    return services(request).checker


async def get_signer(request: Request) -> Signer:
    return services(request).signer


async def get_access_log(request: Request) -> AccessLog:
    return services(request).access_log


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request, committed before the response is sent."""
    async with services(request).database.transaction() as session:
        yield session


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A transaction for a request that only reads."""
    async with services(request).database.transaction(read_only=True) as session:
        yield session


async def authorize(request: Request, token: str | None, scopes: tuple[str, ...]) -> Principal:
    """The principal of a bearer token that holds every one of `scopes` (or `admin`; with no `scopes`, any one
    scope); 401 for a missing or bad token or a tenant that does not exist, 403 for a missing scope."""
    if not token:
        raise Unauthorized("a bearer token is required")
    built = services(request)
    principal = await built.verifier.verify_refreshing(token)
    # Scopes before the tenant: a token refused for its scope costs no database round trip.
    missing = [scope for scope in scopes if not principal.has(scope)]
    if missing:
        raise Forbidden(f"this needs the scope {' '.join(missing)}")
    if not scopes and not principal.scopes & SCOPES:
        raise Forbidden("this needs at least one scope")
    if not await built.tenants.exists(principal.tenant):
        raise Unauthorized("the token names a tenant that does not exist")
    return principal


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer ...` header (for routes that read it without a dependency)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


async def metrics_access(request: Request) -> None:
    """With CONSENTD_METRICS_TOKEN set, 401 unless the request bears it (compared in constant time)."""
    expected = app_settings(request).metrics_token
    if expected and not secrets.compare_digest((bearer_token(request) or "").encode(), expected.encode()):
        raise Unauthorized("/metrics needs the bearer token set in CONSENTD_METRICS_TOKEN")


def require_scopes(*scopes: str):
    """A dependency that yields the principal when it holds every one of `scopes` (or `admin`; none: any scope)."""

    # One dependency level (HTTPBearer under it), not a chain: each level costs FastAPI time on the hot path.
    async def dependency(request: Request, credentials: Credentials) -> Principal:
        return await authorize(request, credentials.credentials if credentials else None, scopes)

    return Depends(dependency)


# Line-oriented bodies (streaming checks, imports), by media type.
LINE_FORMATS = {
    "text/csv": "csv", "application/x-ndjson": "ndjson", "application/ndjson": "ndjson", "application/jsonl": "ndjson",
}


def media_type(request: Request, default: str = "") -> str:
    """The request's media type, without parameters, lower-cased."""
    return request.headers.get("content-type", default).split(";")[0].strip().lower()


def line_format(request: Request) -> str | None:
    """"csv" or "ndjson" by the request's media type; None for anything else."""
    return LINE_FORMATS.get(media_type(request))


async def json_body(request: Request, model: type[M]) -> M:
    """The request body validated as `model`, failing as FastAPI's own body parameters do (422, loc under body).

    For routes on the hot path that skip FastAPI's parameter machinery; pydantic parses the JSON itself.
    """
    content_type = media_type(request, "application/json")
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise RequestValidationError([{"loc": ("body",), "msg": "the body must be application/json", "type": "json"}])
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]) from None


_FLAGS = {"true": True, "1": True, "false": False, "0": False}


def query_flag(request: Request, name: str) -> bool | None:
    """The boolean query parameter `name` (true, false, 1 or 0; None when absent), failing as FastAPI's own query
    parameters do (422, loc under query). For routes on the hot path that skip FastAPI's parameter machinery."""
    value = request.query_params.get(name)
    if value is None:
        return None
    flag = _FLAGS.get(value.lower())
    if flag is None:
        raise RequestValidationError([{"loc": ("query", name), "msg": "must be true, false, 1 or 0", "type": "bool_parsing"}])
    return flag


# The ASGI scope entry middleware.Edge reads (CORS of the public endpoints): the origin a public request may answer to.
CORS_ORIGIN = "consentd.cors_origin"


def request_origin(request: Request) -> str | None:
    """The page's origin: `Origin`, else (a same-origin GET sends none) the origin of `Referer`."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        referer = request.headers.get("referer")
        if not referer:
            return None
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    try:
        return normalise_origin(origin)
    except ValueError:
        return None


async def public_access(
    request: Request,
    key: Annotated[str | None, Query(description="the publishable key, pk_...", pattern=r"^pk_[A-Za-z0-9_-]{1,61}$")] = None,
) -> KeyGrant:
    """The grant of the request's publishable key, from one of its origins, within the rate limits.

    429 past the rate of the client's address or of the key; 401 for a missing, unknown or revoked key; 403 for
    a page of another origin. Only an allowed origin is ever named in Access-Control-Allow-Origin.
    """
    built = services(request)
    await built.throttle.hit("ip", request.client.host if request.client else "")
    if not key:
        raise Unauthorized("a publishable key is required: ?key=pk_...", bearer=False)
    grant = await built.banner_keys.grant(key)
    if grant is None:
        raise Unauthorized("unknown or revoked publishable key", bearer=False)
    origin = request_origin(request)
    if origin is None or origin not in grant.origins:
        raise Forbidden("this key is not valid for this page's origin")
    request.scope[CORS_ORIGIN] = origin
    await built.throttle.hit("key", grant.key)
    return grant


DatabaseDep = Annotated[Database, Depends(get_database)]
KeysDep = Annotated[IdentifierKeys, Depends(get_identifier_keys)]
CheckerDep = Annotated[Checker, Depends(get_checker)]
RuleCacheDep = Annotated[RuleCache, Depends(get_rule_cache)]
AccessLogDep = Annotated[AccessLog, Depends(get_access_log)]
SignerDep = Annotated[Signer, Depends(get_signer)]
# scope="function": the commit happens before the response is sent, so a 201 is readable when the client gets it.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session)]
AnyPrincipal = Annotated[Principal, require_scopes()]
PublicAccess = Annotated[KeyGrant, Depends(public_access)]
