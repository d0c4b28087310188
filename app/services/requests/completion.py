"""What completing a request does, right by right, in the completing transaction.

`restriction`: the subject's checks answer `restricted` until the restriction is lifted (another restriction
request, with `lift`). `objection`: every purpose objected to (the `marketing` purposes for direct marketing, the
`profiling` ones for profiling, or those named) is withdrawn on every channel, by method `objection`; a person
consentd has never seen who objects to direct marketing is suppressed on every channel instead. `access` and
`portability`: the export (exports.py) is ready to be fetched. `rectification`: identifiers are removed and added,
and the third parties the person shares with are listed to be told.
"""

from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Unprocessable
from app.models import ConsentState
from app.models.base import table_of
from app.models.common import Identifiers, SubjectRef
from app.models.consents import NO_CHANNEL
from app.models.requests import DataRequest
from app.models.suppressions import SuppressionsIn
from app.services import purposes, subjects, suppressions
from app.services.ledger import consents, events
from app.services.purposes import OWN_BASIS, Rule
from app.services.subjects import IdentifierKeys

# The channels a direct-marketing objection suppresses a stranger on: all of them.
CHANNELS = ("email", "sms", "phone", "post")
OBJECTION_CATEGORIES = {"direct_marketing": "marketing", "profiling": "profiling"}

Completion = Callable[[AsyncSession, IdentifierKeys, str, DataRequest], Awaitable[dict[str, Any]]]


async def restrict(session: AsyncSession, keys: IdentifierKeys, actor: str, row: DataRequest) -> dict[str, Any]:
    details = row.details or {}
    lift = bool(details.get("lift"))
    if row.subject_id is None:
        return {"done": [], "nothing_held": True}
    changed = await subjects.set_flag(session, tenant=row.tenant_id, subject_id=row.subject_id, flag="restricted", on=not lift)
    if lift:
        return {"done": ["restriction lifted" if changed else "the subject was not restricted"]}
    return {"done": [f"restricted ({details['grounds']})" if changed else "the subject was restricted already"]}


async def object_to(session: AsyncSession, keys: IdentifierKeys, actor: str, row: DataRequest) -> dict[str, Any]:
    details = row.details or {}
    objected = await _objected(session, tenant=row.tenant_id, details=details)
    withheld = [
        {"purpose": key, "reason": f"rests on {rule.legal_basis.replace('_', ' ')}, which an objection does not end"}
        for key, rule in objected.items() if rule.legal_basis in OWN_BASIS
    ]
    rules = {key: rule for key, rule in objected.items() if rule.legal_basis not in OWN_BASIS}
    if row.subject_id is None:
        if details["to"] != "direct_marketing" or row.id_type is None or row.value_sealed is None:
            return {"done": [], "nothing_held": True, "withheld": withheld}
        await suppressions.add(
            session, keys, tenant=row.tenant_id, actor=actor,
            body=SuppressionsIn.model_validate({
                "entries": [{row.id_type: keys.unseal(row.value_sealed)}], "channels": list(CHANNELS), "reason": "manual",
            }),
        )
        return {"done": [f"suppressed on {', '.join(CHANNELS)}"], "nothing_held": True, "withheld": withheld}
    decided = tuple(
        events.Decided(key, channel, "withdrawn")
        for key, rule in sorted(rules.items()) for channel in (rule.channels or (NO_CHANNEL,))
    )
    if decided:
        record = events.Record(
            tenant=row.tenant_id, decisions=decided, captured_at=None, source="data-subject-request", method="objection",
            policy_version=None, collection_point=None, actor=actor, evidence={"request_id": str(row.id)},
        )
        await consents.append(session, events.drafts(record, subject_id=row.subject_id, rules=rules), rules)
    return {
        "done": [f"withdrew {d.purpose}{'/' + d.channel if d.channel else ''}" for d in decided],
        "withheld": withheld,
    }


async def _objected(session: AsyncSession, *, tenant: str, details: dict[str, Any]) -> dict[str, Rule]:
    """The purposes an objection covers, with their rules; 422 for a named purpose the tenant does not have."""
    everything = await purposes.list_all(session, tenant=tenant)
    if details["to"] == "purposes":
        named = set(details["purposes"])
        unknown = sorted(named - {p.key for p in everything})
        if unknown:
            raise Unprocessable(f"unknown purposes: {', '.join(unknown)}", loc=["details", "purposes"])
        chosen = [p for p in everything if p.key in named]
    else:
        category = OBJECTION_CATEGORIES[details["to"]]
        chosen = [p for p in everything if p.category == category]
    return {p.key: purposes.to_rule(p) for p in chosen}


async def hand_over(session: AsyncSession, keys: IdentifierKeys, actor: str, row: DataRequest) -> dict[str, Any]:
    """Access and portability: the export is fetched from the request (GET /v1/requests/{id}/export)."""
    if row.subject_id is None:
        return {"done": [], "nothing_held": True, "export": f"/v1/requests/{row.id}/export"}
    return {"done": ["export ready"], "export": f"/v1/requests/{row.id}/export"}


async def rectify(session: AsyncSession, keys: IdentifierKeys, actor: str, row: DataRequest) -> dict[str, Any]:
    """Replace identifiers in this transaction (blind index and sealed value): the ones to remove first, then the
    new ones (409 when another subject holds one). `recipients`: the third parties the person agreed to share with,
    to tell of the change."""
    details = row.details or {}
    if row.subject_id is None:
        return {"done": [], "nothing_held": True}
    done, withheld = [], []
    for index, ref in enumerate(details.get("remove", [])):
        ((kind, value),) = ref.items()
        loc = ("details", "remove", index)
        if await subjects.detach(session, keys, tenant=row.tenant_id, subject_id=row.subject_id, kind=kind, value=value, loc=loc):
            done.append(f"removed the {kind}")
        else:
            withheld.append({"identifier": kind, "reason": "not an identifier of this person"})
    added = details.get("add") or {}
    if added:
        await subjects.resolve(
            session, keys, tenant=row.tenant_id, ref=SubjectRef(subject_id=row.subject_id), identifiers=Identifiers(**added)
        )
        done += [f"added the {kind}" for kind in added]
    return {"done": done, "withheld": withheld, "recipients": await recipients(session, row)}


async def recipients(session: AsyncSession, row: DataRequest) -> list[dict[str, str]]:
    """The third parties the subject's standing grants share their data with (a purpose's `third_party`)."""
    state = table_of(ConsentState)
    granted = set((await session.execute(
        sa.select(state.c.purpose).where(
            state.c.tenant_id == row.tenant_id, state.c.subject_id == row.subject_id, state.c.status == "granted"
        )
    )).scalars())
    shared = {(p.third_party, p.key) for p in await purposes.list_all(session, tenant=row.tenant_id)
              if p.third_party and p.key in granted}
    return [{"third_party": third_party, "purpose": key} for third_party, key in sorted(shared)]


COMPLETIONS: dict[str, Completion] = {
    "restriction": restrict, "objection": object_to, "access": hand_over, "portability": hand_over,
    "rectification": rectify,
}
