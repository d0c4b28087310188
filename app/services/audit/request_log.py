"""A request's log: append-only (the database refuses UPDATE and DELETE) and one hash chain per request, so that an
auditor can see who did what and when, and that nothing was taken out or changed since.

Each entry's hash is the SHA-256 of the JSON array [FORMAT, tenant, request id, chain index, previous hash, at
(UTC, microseconds, Z), action, actor, note]; the first entry's previous hash is GENESIS.
"""

import hashlib
import uuid
from datetime import datetime

import orjson

from app.services.ledger import GENESIS, timestamp

FORMAT = "consentd-request-log-v1"


def entry_hash(
    *, tenant: str, request_id: uuid.UUID, chain_index: int, prev_hash: str, at: datetime, action: str, actor: str,
    note: str | None,
) -> str:
    canonical = [FORMAT, tenant, str(request_id), chain_index, prev_hash, timestamp(at), action, actor, note]
    return hashlib.sha256(orjson.dumps(canonical)).hexdigest()


def chain_breaks(tenant: str, request_id: uuid.UUID, entries: list[dict]) -> list[int]:
    """The chain indexes (in order) of entries whose place or hash does not follow from the ones before."""
    broken, prev_hash = [], GENESIS
    for index, entry in enumerate(entries, start=1):
        expected = entry_hash(
            tenant=tenant, request_id=request_id, chain_index=index, prev_hash=prev_hash, at=entry["at"],
            action=entry["action"], actor=entry["actor"], note=entry["note"],
        )
        if entry["chain_index"] != index or entry["prev_hash"] != prev_hash or entry["hash"] != expected:
            broken.append(entry["chain_index"])
        prev_hash = entry["hash"]
    return broken
