"""Audit and proof: access log, chain/state/suppression verification, signed checkpoints, exports, receipts."""

from . import access_log, checkpoints, exports, receipts, state_check, suppression_check, verification
from .access_log import AccessLog

__all__ = [
    "AccessLog",
    "access_log",
    "checkpoints",
    "exports",
    "receipts",
    "state_check",
    "suppression_check",
    "verification",
]
