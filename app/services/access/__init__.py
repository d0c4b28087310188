"""The access log: who read or exported which subject's data, and when (append-only). Below the ledger, so that a
read can record itself in its own transaction."""

from . import log
from .log import (
    CONSENTS,
    EXPORT,
    HISTORY,
    LOOKUP,
    PG_ENTRY_IF_FOUND,
    RECEIPT,
    SUBJECT,
    SUBJECT_EXPORT,
    AccessLog,
    append,
    page,
)

__all__ = [
    "CONSENTS",
    "EXPORT",
    "HISTORY",
    "LOOKUP",
    "PG_ENTRY_IF_FOUND",
    "RECEIPT",
    "SUBJECT",
    "SUBJECT_EXPORT",
    "AccessLog",
    "append",
    "log",
    "page",
]
