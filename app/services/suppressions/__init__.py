"""The suppression list (store) and its append-only, chained log (log)."""

from . import log
from .log import ADD, GENESIS, event_hash
from .store import MAX_PAGE, add, page, remove

__all__ = [
    "ADD",
    "GENESIS",
    "MAX_PAGE",
    "add",
    "event_hash",
    "log",
    "page",
    "remove",
]
