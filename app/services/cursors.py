"""Opaque page cursors: a few bytes in URL-safe base64 without padding (each list parses its own bytes)."""

import base64


def pack(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unpack(cursor: str) -> bytes:
    """The bytes of a cursor `pack` wrote; ValueError (binascii.Error is one) for anything else."""
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
