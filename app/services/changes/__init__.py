"""The change feed: every state that moved (consent, suppression, subject flag), in feed order, paged by cursor."""

from .feed import MAX_PAGE, PG_POSITION, STATE_COLUMNS, append, decode_cursor, head, page, record

__all__ = [
    "MAX_PAGE",
    "PG_POSITION",
    "STATE_COLUMNS",
    "append",
    "decode_cursor",
    "head",
    "page",
    "record",
]
