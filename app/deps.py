"""Typed dependencies: the database session, the calling principal, scope requirements."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import Database
from app.errors import Forbidden, Unauthorized
from app.security import Principal, TokenVerifier


def get_database(request: Request) -> Database:
    return request.app.state.database


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request, committed before the response is sent."""
    async with request.app.state.database.transaction() as session:
        yield session


_bearer = HTTPBearer(auto_error=False, description="A JWT with the claims iss, aud, exp, sub, tenant, scope")


async def get_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise Unauthorized("a bearer token is required")
    verifier: TokenVerifier = request.app.state.verifier
    return await verifier.verify_refreshing(credentials.credentials)


DatabaseDep = Annotated[Database, Depends(get_database)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
# scope="function": the commit happens before the response is sent, so a 201 is readable when the client gets it.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
AnyPrincipal = Annotated[Principal, Depends(get_principal)]


def require_scopes(*scopes: str):
    """A dependency that yields the principal when it holds every one of `scopes` (or `admin`)."""

    def dependency(principal: AnyPrincipal) -> Principal:
        missing = [scope for scope in scopes if not principal.has(scope)]
        if missing:
            raise Forbidden(f"this needs the scope {' '.join(missing)}")
        return principal

    return Depends(dependency)
