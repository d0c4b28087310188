"""No domain knowledge: dialect helpers (sql), keyset cursors, long reads on a private connection (snapshots), health,
per-key gates, versioned caches."""

from . import cursors, health, snapshots
from .gates import Gates
from .snapshots import END, Query, Rows
from .sql import columns, in_slices, is_postgres, raw_connection, through_temp_table, upsert
from .versioned import Versioned

__all__ = [
    "END",
    "Gates",
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
    "through_temp_table",
    "upsert",
]
