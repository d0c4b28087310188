"""Verifying a tenant's data-subject requests: every request's log chain (request_log.py), and the subject flags
checks read (`restricted`, `erased`) against the flag changes those logs record.

A completion that sets or clears a flag appends an entry of its own to the request's log (action `restricted`,
`unrestricted` or `erased`, note `subject <id>`). Replayed in order, those entries give each subject's flags; a
subject whose flags differ was restricted, released or un-erased behind the service's back (`state_mismatch`), and
a log entry that no longer follows from the ones before was changed. Memory holds one request's log and the flag
changes, which are few.
"""

import uuid
from collections.abc import Callable
from typing import Any

import orjson
import sqlalchemy as sa

from app.models import RequestLogEntry, Subject
from app.models.base import table_of
from app.services.audit.request_log import chain_breaks
from app.services.kit import Query

# A log action that changes a flag: the flag, and whether it is set.
FLAG_ACTIONS = {"restricted": ("restricted", True), "unrestricted": ("restricted", False), "erased": ("erased", True)}
_COLUMNS = ("seq", "request_id", "chain_index", "at", "action", "actor", "note", "prev_hash", "hash")


def flag_note(subject_id: uuid.UUID) -> str:
    """The note of a flag change's log entry: the subject it changed."""
    return f"subject {subject_id}"


async def check(
    query: Query, *, tenant: str, report: Callable[[str], None], mismatch: Callable[[Any, str], None]
) -> None:
    """`report(detail)` for each broken request log; `mismatch(subject_id, detail)` for each subject whose flags
    disagree with the logs."""
    log, subjects = table_of(RequestLogEntry), table_of(Subject)
    changes: list[tuple[Any, int, uuid.UUID, str, bool]] = []
    request_id: Any = None
    entries: list[Any] = []
    rows = await query(
        sa.select(*(log.c[n] for n in _COLUMNS)).where(log.c.tenant_id == tenant).order_by(log.c.request_id, log.c.chain_index, log.c.seq)
    )
    async for row in rows:
        if row["request_id"] != request_id:
            _chain(tenant, request_id, entries, report)
            request_id, entries = row["request_id"], []
        entries.append(row)
        if row["action"] in FLAG_ACTIONS:
            flag, on = FLAG_ACTIONS[row["action"]]
            changes.append((row["at"], row["seq"], _subject_of(row["note"]), flag, on))
    _chain(tenant, request_id, entries, report)

    expected: dict[uuid.UUID, set[str]] = {}
    for _, _, subject_id, flag, on in sorted(changes, key=lambda change: (change[0], change[1])):
        flags = expected.setdefault(subject_id, set())
        if on:
            flags.add(flag)
        else:
            flags.discard(flag)
    flagged = await query(
        sa.select(subjects.c.id, subjects.c.flags)
        .where(subjects.c.tenant_id == tenant, sa.cast(subjects.c.flags, sa.Text) != "[]")
    )
    async for row in flagged:
        flags = set(row["flags"] if isinstance(row["flags"], list) else _parsed(row["flags"]))
        wanted = expected.pop(row["id"], set())
        if flags != wanted:
            mismatch(row["id"], _detail(flags, wanted))
    for subject_id, wanted in expected.items():
        if wanted:
            mismatch(subject_id, _detail(set(), wanted))


def _chain(tenant: str, request_id: Any, entries: list, report: Callable[[str], None]) -> None:
    if request_id is None:
        return
    for index in chain_breaks(tenant, request_id, entries):
        report(f"entry {index} of the log of request {request_id} no longer follows from the ones before: it was changed")


def _subject_of(note: str | None) -> uuid.UUID:
    try:
        return uuid.UUID((note or "").removeprefix("subject "))
    except ValueError:
        return uuid.UUID(int=0)  # an altered note: its chain is broken too, and no subject matches


def _parsed(text: Any) -> list[str]:
    return list(orjson.loads(text)) if isinstance(text, str | bytes) else list(text or [])


def _detail(flags: set[str], wanted: set[str]) -> str:
    shown = ", ".join(sorted(flags)) or "none"
    logged = ", ".join(sorted(wanted)) or "none"
    return f"the subject's flags ({shown}) are not the ones its requests' logs give ({logged}): checks read them"
