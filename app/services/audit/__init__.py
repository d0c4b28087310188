"""Audit and proof: chain/state/suppression/request-log verification, signed checkpoints, exports, receipts (the
access log they read is services/access/), and the chained format of a data-subject request's log."""

from . import checkpoints, exports, receipts, request_check, request_log, state_check, suppression_check, verification

__all__ = [
    "checkpoints",
    "exports",
    "receipts",
    "request_check",
    "request_log",
    "state_check",
    "suppression_check",
    "verification",
]
