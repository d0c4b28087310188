"""Data-subject requests on the statutory clock: deadlines (pure), the request's chained log, the requests themselves."""

from . import deadlines, log
from .store import (
    MAX_PAGE,
    Actor,
    clarify,
    create,
    days_left,
    extend,
    get,
    open_requests,
    page,
    refuse,
    resume,
    verify,
)

__all__ = [
    "MAX_PAGE",
    "Actor",
    "clarify",
    "create",
    "days_left",
    "deadlines",
    "extend",
    "get",
    "log",
    "open_requests",
    "page",
    "refuse",
    "resume",
    "verify",
]
