"""Audit and proof: chain/state/suppression verification, signed checkpoints, exports, receipts (the access log
they read is services/access/)."""

from . import checkpoints, exports, receipts, state_check, suppression_check, verification

__all__ = [
    "checkpoints",
    "exports",
    "receipts",
    "state_check",
    "suppression_check",
    "verification",
]
