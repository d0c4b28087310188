"""What completing a request does, right by right, in the completing transaction.

`restriction`: the subject's checks answer `restricted` until the restriction is lifted (another restriction
request, with `lift`). `objection`: every purpose objected to (the `marketing` purposes for direct marketing, the
`profiling` ones for profiling, or those named) is withdrawn on every channel, by method `objection`; a person
consentd has never seen who objects to direct marketing is suppressed on every channel instead. `access` and
`portability`: the export (exports.py) is ready to be fetched. `rectification`: identifiers are removed and added,
and the third parties the person shares with are listed to be told. `erasure`: erasure.py, in part while a legal
hold is in force. A request about a person erased since answers that nothing is held.
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
from app.services.purposes import LEGITIMATE_INTEREST, OWN_BASIS, Rule
from app.services.requests import erasure, holds
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
        if details["to"] != "direct_marketing" or not await _suppress_stranger(session, keys, actor, row):
            return {"done": [], "nothing_held": True, "withheld": withheld}
        return {"done": [f"suppressed on {', '.join(CHANNELS)}"], "nothing_held": True, "withheld": withheld}
    return {"done": await _withdraw(session, row, actor, rules, method="objection"), "withheld": withheld}


async def _withdraw(session: AsyncSession, row: DataRequest, actor: str, rules: dict[str, Rule], *, method: str) -> list[str]:
    """Withdraw each of these purposes on every channel for the request's subject (one record); what was done."""
    decided = tuple(
        events.Decided(key, channel, "withdrawn")
        for key, rule in sorted(rules.items()) for channel in (rule.channels or (NO_CHANNEL,))
    )
    return await _record_withdrawals(session, row, actor, rules, decided, method=method)


async def _withdraw_standing(session: AsyncSession, row: DataRequest, actor: str) -> list[str]:
    """Withdraw what lets the tenant process the subject's data on consent or interest: every standing grant, and
    every legitimate-interest purpose on each channel not objected to yet (method `erasure`)."""
    state = table_of(ConsentState)
    standing = {
        (purpose, channel): status
        for purpose, channel, status in await session.execute(
            sa.select(state.c.purpose, state.c.channel, state.c.status)
            .where(state.c.tenant_id == row.tenant_id, state.c.subject_id == row.subject_id)
        )
    }
    rules = {p.key: purposes.to_rule(p) for p in await purposes.list_all(session, tenant=row.tenant_id)}
    decided = tuple(
        events.Decided(key, channel, "withdrawn")
        for key, rule in sorted(rules.items()) if rule.legal_basis not in OWN_BASIS
        for channel in (rule.channels or (NO_CHANNEL,))
        if standing.get((key, channel)) == "granted"
        or (rule.legal_basis == LEGITIMATE_INTEREST and standing.get((key, channel)) != "withdrawn")
    )
    return await _record_withdrawals(session, row, actor, rules, decided, method="erasure")


async def _record_withdrawals(
    session: AsyncSession, row: DataRequest, actor: str, rules: dict[str, Rule], decided: tuple[events.Decided, ...],
    *, method: str,
) -> list[str]:
    assert row.subject_id is not None, "withdrawals are made for a subject consentd knows"
    if decided:
        record = events.Record(
            tenant=row.tenant_id, decisions=decided, captured_at=None, source="data-subject-request", method=method,
            policy_version=None, collection_point=None, actor=actor, evidence={"request_id": str(row.id)},
        )
        await consents.append(session, events.drafts(record, subject_id=row.subject_id, rules=rules), rules)
    return [f"withdrew {d.purpose}{'/' + d.channel if d.channel else ''}" for d in decided]


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


async def _suppress_stranger(session: AsyncSession, keys: IdentifierKeys, actor: str, row: DataRequest) -> bool:
    """Suppress the identifier a request about a person consentd has never seen names, on every channel; False
    when it names none that can be (a device id)."""
    if row.id_type not in SUPPRESSIBLE or row.value_sealed is None:
        return False
    await _suppress(session, keys, actor, tenant=row.tenant_id, entries=[{row.id_type: keys.unseal(row.value_sealed)}])
    return True


SUPPRESSIBLE = ("email", "phone", "external_id")


async def _suppress(session: AsyncSession, keys: IdentifierKeys, actor: str, *, tenant: str, entries: list[dict]) -> None:
    await suppressions.add(
        session, keys, tenant=tenant, actor=actor,
        body=SuppressionsIn.model_validate({"entries": entries, "channels": list(CHANNELS), "reason": "manual"}),
    )


async def erase(session: AsyncSession, keys: IdentifierKeys, actor: str, row: DataRequest) -> dict[str, Any]:
    """Erasure: of everything (erasure.erase), or, under a legal hold, of what the holds do not keep: every decision
    resting on consent or interest withdrawn, every identifier suppressed on every channel (`pending`: the rest
    runs when the last hold is released). A person never seen: their identifier is suppressed, by its blind index
    only (the request keeps no sealed value either)."""
    if row.subject_id is None:
        suppressed = await _suppress_stranger(session, keys, actor, row)
        if suppressed:
            assert row.id_hash is not None
            await erasure.forget_stranger(session, tenant=row.tenant_id, id_hash=row.id_hash)
        return {"done": [f"suppressed on {', '.join(CHANNELS)}"] if suppressed else [], "nothing_held": True}
    held = await holds.in_force_on(session, tenant=row.tenant_id, subject_id=row.subject_id)
    if held:
        done = await _withdraw_standing(session, row, actor)
        entries = [
            {kind: value} for kind, value in await subjects.identifiers_of(session, keys, tenant=row.tenant_id, subject_id=row.subject_id)
            if kind in SUPPRESSIBLE
        ]
        if entries:
            await _suppress(session, keys, actor, tenant=row.tenant_id, entries=entries)
            done.append(f"suppressed {len(entries)} identifiers on {', '.join(CHANNELS)}")
        withheld = [
            {"hold_id": str(hold.id), "reason": hold.reason, "kept": "identifiers and the evidence of their decisions"}
            for hold in held
        ]
        return {"done": done, "withheld": withheld, "pending": True}
    return {"done": _erased_words(await erasure.erase(session, tenant=row.tenant_id, subject_id=row.subject_id))}


def _erased_words(counts: dict[str, int]) -> list[str]:
    return [
        f"erased {counts['identifiers']} identifiers", f"erased the evidence of {counts['evidence']} events",
        "the decisions stay as pseudonymous proof; every check by a former identifier answers erased",
    ]


async def finish_erasure(session: AsyncSession, row: DataRequest) -> list[str]:
    """The rest of an erasure completed in part under holds, once the last is released (store.release_hold)."""
    assert row.subject_id is not None, "only an erasure of a known person waits for holds"
    return _erased_words(await erasure.erase(session, tenant=row.tenant_id, subject_id=row.subject_id))


COMPLETIONS: dict[str, Completion] = {
    "restriction": restrict, "objection": object_to, "access": hand_over, "portability": hand_over,
    "rectification": rectify, "erasure": erase,
}
