"""No domain knowledge: dialect helpers (sql), keyset cursors, long reads on a private connection (snapshots), health."""

from . import cursors, health, snapshots
from .snapshots import END, Query, Rows
from .sql import columns, in_slices, is_postgres, raw_connection, upsert
from .versioned import Versioned

__all__ = [
    "END",
    "Query",
    "Rows",
    "Versioned",
    "columns",
    "cursors",
    "health",
    "in_slices",
    "is_postgres",
    "raw_connection",
    "snapshots",
    "upsert",
]
