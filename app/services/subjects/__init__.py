"""Subjects and their identifiers: normalisation, blind index and sealing (identifiers), find/resolve/flags (store), bulk writes."""

from . import bulk, identifiers
from .identifiers import IdentifierKeys, InvalidIdentifier, normalise
from .store import (
    DEVICE,
    Naming,
    detach,
    erased_message,
    find,
    flags_of,
    get,
    holder,
    identifiers_of,
    lookup,
    naming,
    require,
    resolve,
    resolve_many,
    set_flag,
)

__all__ = [
    "DEVICE",
    "IdentifierKeys",
    "InvalidIdentifier",
    "Naming",
    "bulk",
    "detach",
    "erased_message",
    "find",
    "flags_of",
    "get",
    "holder",
    "identifiers",
    "identifiers_of",
    "lookup",
    "naming",
    "normalise",
    "require",
    "resolve",
    "resolve_many",
    "set_flag",
]
