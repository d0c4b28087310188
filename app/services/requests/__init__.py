"""Data-subject requests on the statutory clock: deadlines (pure), the requests and their chained logs (store; the
log's format is audit/request_log.py), what completing each right does (completion, erasure), legal holds (holds),
the export an access or portability request hands over (exports)."""

from . import completion, deadlines, erasure, exports, holds
from .store import (
    MAX_PAGE,
    RECEIPT,
    Actor,
    clarify,
    complete,
    create,
    days_left,
    exportable,
    extend,
    get,
    open_requests,
    page,
    receipt,
    refuse,
    release_hold,
    resume,
    verify,
)

__all__ = [
    "MAX_PAGE",
    "RECEIPT",
    "Actor",
    "clarify",
    "complete",
    "completion",
    "create",
    "days_left",
    "deadlines",
    "erasure",
    "exportable",
    "exports",
    "extend",
    "get",
    "holds",
    "open_requests",
    "page",
    "receipt",
    "refuse",
    "release_hold",
    "resume",
    "verify",
]
