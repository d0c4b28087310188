"""Exception handlers: every error leaves as application/problem+json; an unreachable database is a 503."""

import asyncio
import logging
from collections.abc import Mapping

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.responses import Response

from app.errors import AppError, Unavailable, problem

log = logging.getLogger("consentd")
PROBLEM = "application/problem+json"


def problem_response(status: int, body: dict, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM, headers=headers)


# Serialization failure, deadlock, lock not available, statement cancelled: worth a retry, not a 500.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014"})


def database_unavailable(exc: BaseException) -> bool:
    """The database is unreachable, too slow, or refused this transaction for a transient reason."""
    if getattr(exc, "sqlstate", None) in TRANSIENT_SQLSTATES:
        return True
    if isinstance(exc, (PoolTimeout, OperationalError)):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or (exc.orig is not None and database_unavailable(exc.orig))
    return isinstance(
        exc,
        (
            OSError,
            TimeoutError,
            asyncio.TimeoutError,
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.CannotConnectNowError,
        ),
    ) or (exc.__cause__ is not None and database_unavailable(exc.__cause__))


async def app_error(_request: Request, exc: AppError) -> Response:
    return problem_response(exc.status, problem(exc.status, exc.title, exc.detail, **exc.extra), exc.headers)


async def validation_error(_request: Request, exc: RequestValidationError) -> Response:
    # Only loc and msg: the offending input may be personal data and is not echoed back.
    errors = [{"loc": list(error["loc"]), "msg": error["msg"]} for error in exc.errors()]
    detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:3])
    return problem_response(422, problem(422, "Unprocessable content", detail, errors=errors))


async def http_error(_request: Request, exc: HTTPException) -> Response:
    title = {400: "Bad request", 404: "Not found", 405: "Method not allowed", 413: "Payload too large"}.get(
        exc.status_code, "HTTP error"
    )
    return problem_response(exc.status_code, problem(exc.status_code, title, str(exc.detail)), exc.headers)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    if database_unavailable(exc):
        log.warning("database unavailable during %s %s: %s", request.method, request.url.path, type(exc).__name__)
        unavailable = Unavailable()
        response = await app_error(request, unavailable)
    else:
        log.exception("unexpected error during %s %s", request.method, request.url.path)
        response = problem_response(500, problem(500, "Internal server error", "an unexpected error occurred"))
    # The handler of a bare Exception answers from Starlette's outermost layer, outside middleware.Edge.
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


# Handled by class (not by a bare Exception handler, which Starlette re-raises after answering).
DATABASE_ERRORS = (DBAPIError, PoolTimeout, OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def install(app: FastAPI) -> None:
    # Starlette types every handler as taking any Exception, though it calls each with the class it is added for.
    app.add_exception_handler(AppError, app_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, http_error)  # type: ignore[arg-type]
    for error in DATABASE_ERRORS:
        app.add_exception_handler(error, unexpected_error)
    app.add_exception_handler(Exception, unexpected_error)
