"""Cookie choices of one device, as the banner posts and reads them: consent events with source `cookie_banner`."""

import ipaddress
import uuid
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database, acquire
from app.errors import Unavailable, Unprocessable
from app.models import ConsentState, Subject
from app.models.banners import CookieConsentIn, CookieConsentsOut, CookieConsentsRecorded, CookieEventOut
from app.models.base import table_of, utcnow
from app.models.common import SubjectRef
from app.models.consents import NO_CHANNEL
from app.services import subjects
from app.services.banner import banners
from app.services.checks import Standing, expires_at, is_effective
from app.services.ledger import consents, pg_write
from app.services.ledger.events import Decided, Event, Record, drafts
from app.services.purposes import OWN_BASIS, check_status
from app.services.subjects import IdentifierKeys

SOURCE = "cookie_banner"
CONFIG_VERSION = "SELECT config_version FROM tenants WHERE key = $1"


@dataclass(frozen=True)
class Visit:
    """What the request tells about the visitor, kept as evidence of the choice."""

    ip: str | None
    user_agent: str | None
    referer: str | None
    gpc: bool


def truncated_ip(address: str | None) -> str | None:
    """The network, not the host: the IPv4 /24 or IPv6 /48 the address is in."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return None
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


def page_without_query(url: str | None) -> str | None:
    """A page's address without query or fragment, which may carry personal data (an email in a link)."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"[:2000]


def require_issued(keys: IdentifierKeys, *, tenant: str, device_id: str, loc: list[str | int]) -> None:
    """422 unless consentd issued this device id for this tenant: a publishable key is public, so holding the id
    is what lets a browser read or write a device's choices."""
    if not keys.issued_device_id(tenant, device_id):
        raise Unprocessable("device_id was not issued by consentd for this site: post without one to get one", loc=loc)


# The subject flags that stop all processing resting on consent or legitimate interest (checks answer them too).
STOPPED = frozenset({"restricted", "erased"})


async def status(
    session: AsyncSession, keys: IdentifierKeys, *, tenant: str, view: banners.BannerView, device_id: str
) -> CookieConsentsOut:
    """The device's standing cookie choices and whether the banner must ask again."""
    require_issued(keys, tenant=tenant, device_id=device_id, loc=["path", "device_id"])
    subject_id = await subjects.find(session, keys, tenant=tenant, ref=SubjectRef(device_id=device_id))
    return await _status(session, tenant=tenant, view=view, subject_id=subject_id, at=utcnow())


async def _status(
    session: AsyncSession, *, tenant: str, view: banners.BannerView, subject_id: uuid.UUID | None, at: datetime
) -> CookieConsentsOut:
    if subject_id is None:
        return CookieConsentsOut(choices={}, policy_version=None, expires_at=None, reprompt=True)
    # The subject's flags and its cookie states in one statement: a restriction is read with the choices.
    subject, state = table_of(Subject), table_of(ConsentState)
    rows = (await session.execute(
        select(subject.c.flags, state.c.purpose, state.c.event_id, state.c.status, state.c.captured_at,
               state.c.policy_version, state.c.purpose_version)
        .select_from(subject.outerjoin(state, and_(
            state.c.tenant_id == subject.c.tenant_id, state.c.subject_id == subject.c.id,
            state.c.purpose.in_(view.rules), state.c.channel == NO_CHANNEL,
        )))
        .where(subject.c.tenant_id == tenant, subject.c.id == subject_id)
    )).all()
    if rows and STOPPED.intersection(rows[0].flags or ()):
        # Restricted or erased (a data-subject request): nothing that rests on the person's consent or interest is
        # processed, so every such category is off, and the banner does not ask (asking would invite processing).
        return CookieConsentsOut(
            choices={key: False for key, rule in view.rules.items() if rule.legal_basis not in OWN_BASIS},
            policy_version=None, expires_at=None, reprompt=False,
        )
    return _out(
        view,
        [(row.purpose, Standing(row.event_id, row.status, row.captured_at, row.policy_version, row.purpose_version))
         for row in rows if row.purpose is not None],
        at,
    )


def _out(view: banners.BannerView, standing: list[tuple[str, Standing]], at: datetime) -> CookieConsentsOut:
    """The answer for the device's standing decisions (purpose, decision), as the banner reads it at `at`."""
    rules = view.rules
    choices: dict[str, bool] = {}
    latest: datetime | None = None
    policy_version: str | None = None
    expiries: list[datetime] = []
    reprompt = False
    for purpose, decision in standing:
        rule = rules[purpose]
        if not is_effective(rule, decision, at):
            reprompt = True  # an expired grant: ask again
            continue
        choices[purpose] = decision.status == "granted"
        if (expiry := expires_at(rule, decision)) is not None:
            expiries.append(expiry)
        if decision.policy_version not in view.standing:
            reprompt = True  # chosen under terms that changed materially since
        if latest is None or decision.captured_at > latest:
            latest, policy_version = decision.captured_at, decision.policy_version
    reprompt = reprompt or any(key not in choices for key in rules)
    return CookieConsentsOut(
        choices=choices, policy_version=policy_version, expires_at=min(expiries, default=None), reprompt=reprompt
    )


async def record(
    database: Database,
    keys: IdentifierKeys,
    views: banners.ViewCache,
    *,
    tenant: str,
    banner_key: str,
    body: CookieConsentIn,
    visit: Visit,
    idempotency_key: str | None,
) -> tuple[int, dict]:
    """Record a device's choices (and, under GPC, the withdrawals it implies); the status code and answer.

    Without a device id a new one is issued; the answer carries it (a replay, the first one's). On PostgreSQL a new
    device without an Idempotency-Key is written through the asyncpg half (ledger/pg_write.py) in two round trips.
    """
    if body.device_id is not None:
        require_issued(keys, tenant=tenant, device_id=body.device_id, loc=["body", "device_id"])
    if database.pool is not None and body.device_id is None and idempotency_key is None:
        return 201, await _record_new_device(database, keys, views, tenant=tenant, banner_key=banner_key, body=body,
                                             visit=visit)
    async with database.transaction() as session:
        return await record_in(session, keys, tenant=tenant, banner_key=banner_key, body=body, visit=visit,
                               idempotency_key=idempotency_key)


def _decisions(view: banners.BannerView, body: CookieConsentIn, visit: Visit) -> list[tuple[str, str, str, str]]:
    """(purpose, channel, status, method) of each choice and each withdrawal GPC implies; 422 for a bad choice."""
    for key, on in body.choices.items():
        if key not in view.rules:
            raise Unprocessable(f"'{key}' is not a cookie category of this banner", loc=["body", "choices", key])
        check_status(view.rules[key], "granted" if on else "withdrawn", loc=["body", "choices", key])
    if body.policy_version not in view.published:
        raise Unprocessable("unknown policy_version: reload the banner", loc=["body", "policy_version"])
    # GPC: an advertising or sharing category the visitor did not explicitly turn on is withdrawn.
    implied = [
        (key, NO_CHANNEL, "withdrawn", "gpc") for key in sorted(view.gpc) if visit.gpc and body.choices.get(key) is not True
    ]
    withdrawn_by_gpc = {key for key, _, _, _ in implied}
    chosen = [
        (key, NO_CHANNEL, "granted" if on else "withdrawn", "banner")
        for key, on in body.choices.items() if key not in withdrawn_by_gpc
    ]
    if not chosen and not implied:
        raise Unprocessable("choose at least one cookie category", loc=["body", "choices"])
    return [*chosen, *implied]


def _evidence(body: CookieConsentIn, visit: Visit, banner_key: str) -> tuple[str | None, dict]:
    """The page the choice was made on (without its query) and the evidence kept with it."""
    page = page_without_query(body.page_url or visit.referer)
    return page, {
        "ip_truncated": truncated_ip(visit.ip),
        "user_agent": (visit.user_agent or "")[:512] or None,
        "page_url": page,
        "gpc": visit.gpc,
        "banner_key": banner_key,
    }


def _answer(standing: CookieConsentsOut, device_id: str, events: list[Event]) -> dict:
    return CookieConsentsRecorded(
        **standing.model_dump(),
        device_id=device_id,
        events=[CookieEventOut(event_id=e.event_id, purpose=e.purpose, status=e.status, method=e.method) for e in events],
    ).model_dump(mode="json")


async def _record_new_device(
    database: Database, keys: IdentifierKeys, views: banners.ViewCache, *, tenant: str, banner_key: str,
    body: CookieConsentIn, visit: Visit,
) -> dict:
    """A new device's first choices, validated against the banner view this worker holds and written in one
    statement fenced on the config version the view was read at. When the version has moved, no view is held, or
    the held view refuses the choices, the version is read and the view with it, and the write made again."""
    assert database.pool is not None
    async with acquire(database.pool) as connection:
        held, fresh = views.versioned.newest(tenant), False
        for _ in range(3):
            if held is None:
                version = await connection.fetchval(CONFIG_VERSION, tenant)
                async with database.transaction(read_only=True) as session:
                    # Of `version` or newer: a write fenced on `version` is never validated against an older one.
                    held, fresh = (version, await banners.load_view(session, tenant=tenant)), True
                views.versioned.put(tenant, *held)
            version, view = held
            try:
                record = _record(view, body, visit, banner_key=banner_key, tenant=tenant)
            except Unprocessable:
                if fresh:
                    raise
                held = None  # refused by a view that may be out of date: ask the current one
                continue
            device_id = keys.new_device_id(tenant)
            claim = _device_claim(keys, tenant=tenant, device_id=device_id)
            try:
                _, events = await pg_write.write(
                    connection, view.rules, record, subject_id=None, head=None, claim=claim, fence=version
                )
                break
            except pg_write.ConfigMoved:
                held = None
        else:
            raise Unavailable("the banner's settings are changing: try again")
    # A new device's standing decisions are the ones just written (one per category: choices and GPC never overlap).
    standing = [
        (e.purpose, Standing(e.event_id, e.status, e.captured_at, e.policy_version, e.purpose_version)) for e in events
    ]
    return _answer(_out(view, standing, events[0].recorded_at), device_id, events)


def _record(view: banners.BannerView, body: CookieConsentIn, visit: Visit, *, banner_key: str, tenant: str) -> Record:
    """The choices (and what GPC implies) as the ledger records them; 422 for a choice the banner refuses."""
    decisions = _decisions(view, body, visit)
    page, evidence = _evidence(body, visit, banner_key)
    return Record(
        tenant=tenant,
        decisions=tuple(Decided(purpose, channel, status, method) for purpose, channel, status, method in decisions),
        captured_at=None, source=SOURCE, method="banner", policy_version=body.policy_version,
        collection_point=page[:200] if page else None, actor=f"banner:{banner_key[:11]}", evidence=evidence,
    )


def _device_claim(keys: IdentifierKeys, *, tenant: str, device_id: str) -> pg_write.Claim:
    named = subjects.naming(keys, tenant=tenant, ref=SubjectRef(device_id=device_id), identifiers=None, loc=("body",))
    assert named.own is not None and named.own.sealed is not None
    return pg_write.Claim(id_hash=named.own.id_hash, kind=named.own.kind, sealed=named.own.sealed)


async def record_in(
    session: AsyncSession,
    keys: IdentifierKeys,
    *,
    tenant: str,
    banner_key: str,
    body: CookieConsentIn,
    visit: Visit,
    idempotency_key: str | None,
) -> tuple[int, dict]:
    """The session's half of `record` (SQLite; a known device; an Idempotency-Key), in the caller's transaction."""
    if idempotency_key is not None:
        # Namespaced: a visitor's key can never replay or block an answer of the tenant's own API clients.
        scoped_key = f"banner:{idempotency_key}"
        replay = await consents.claim_idempotency_key(
            session, tenant=tenant, key=scoped_key, digest=consents.request_hash(body, extra={"gpc": visit.gpc})
        )
        if replay is not None:
            return replay.status_code, replay.body
    # Read afresh, not from the GETs' cache: a choice is checked against the banner as it is now.
    view = await banners.load_view(session, tenant=tenant)
    record = _record(view, body, visit, banner_key=banner_key, tenant=tenant)
    device_id = body.device_id or keys.new_device_id(tenant)
    subject_id = await subjects.resolve(
        session, keys, tenant=tenant, ref=SubjectRef(device_id=device_id), identifiers=None
    )
    now = utcnow()
    events = await consents.append(session, drafts(record, subject_id=subject_id, rules=view.rules), view.rules)
    answer = _answer(await _status(session, tenant=tenant, view=view, subject_id=subject_id, at=now), device_id, events)
    if idempotency_key is not None:
        await consents.store_idempotent_answer(
            session, tenant=tenant, key=scoped_key, outcome=consents.Outcome(201, answer)
        )
    return 201, answer
