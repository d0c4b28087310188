"""The append-only consent ledger: a consent write (consents), hash chains, imports, reads (as_of, history)."""

from . import bulk, chains, consents, imports, pg_write, reads
from .chains import (
    CANONICAL_FIELDS,
    EMPTY,
    FORMAT,
    GENESIS,
    canonical_values,
    event_hash,
    evidence_digest,
    extend,
    timestamp,
)

__all__ = [
    "CANONICAL_FIELDS",
    "EMPTY",
    "FORMAT",
    "GENESIS",
    "bulk",
    "canonical_values",
    "chains",
    "consents",
    "event_hash",
    "evidence_digest",
    "extend",
    "imports",
    "pg_write",
    "reads",
    "timestamp",
]
