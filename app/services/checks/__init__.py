"""May we contact this person? The pure decision, its readers on each backend, the Checker, and streamed checks."""

from . import streams
from .checker import Checker
from .decision import Standing, expires_at, is_effective
from .readers import PostgresReader, SqlReader
from .streams import CheckStream, ChunkFailed, Limits

__all__ = [
    "CheckStream",
    "Checker",
    "ChunkFailed",
    "Limits",
    "PostgresReader",
    "SqlReader",
    "Standing",
    "expires_at",
    "is_effective",
    "streams",
]
