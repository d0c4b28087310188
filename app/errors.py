"""Application errors: each carries its HTTP status; one handler renders problem+json (RFC 9457)."""

from typing import Any


class AppError(Exception):
    status: int = 400
    title: str = "Bad request"
    type: str = "about:blank"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


class BadRequest(AppError):
    status, title = 400, "Bad request"


class Unauthorized(AppError):
    status, title = 401, "Unauthorized"

    def __init__(self, detail: str, *, bearer: bool = True) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"} if bearer else None)


class Forbidden(AppError):
    status, title = 403, "Forbidden"


class NotFound(AppError):
    status, title = 404, "Not found"

    def __init__(self, what: str, key: object | None = None) -> None:
        super().__init__(f"{what} not found" if key is None else f"{what} '{key}' not found")


class Conflict(AppError):
    status, title = 409, "Conflict"


class PayloadTooLarge(AppError):
    status, title = 413, "Payload too large"


class UnsupportedMediaType(AppError):
    status, title = 415, "Unsupported media type"


class Unprocessable(AppError):
    """Input that is well-formed but breaks a rule; `errors` follows the validation error shape."""

    status, title = 422, "Unprocessable content"

    def __init__(
        self, detail: str, *, loc: list[str | int] | None = None, errors: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(detail, errors=errors if errors is not None else [{"loc": loc or [], "msg": detail}])


class TooManyRequests(AppError):
    status, title = 429, "Too many requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class Unavailable(AppError):
    status, title = 503, "Service unavailable"

    def __init__(self, detail: str = "the database is unreachable or too busy to answer in time; retry later") -> None:
        super().__init__(detail, headers={"Retry-After": "5"})


def problem(status: int, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    """The body of a problem+json response."""
    return {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
