"""Cookie choices of one device, as the banner posts and reads them: consent events with source `cookie_banner`."""

import ipaddress
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Unprocessable
from app.models import ConsentState
from app.models.banners import CookieConsentIn, CookieConsentsOut, CookieConsentsRecorded, CookieEventOut
from app.models.base import table_of, utcnow
from app.models.common import SubjectRef
from app.models.consents import NO_CHANNEL
from app.services import subjects
from app.services.banner import banners
from app.services.checks import Standing, expires_at, is_effective
from app.services.ledger import consents
from app.services.purposes import check_status
from app.services.subjects import IdentifierKeys

SOURCE = "cookie_banner"


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
    rules = view.rules
    state = table_of(ConsentState)
    rows = await session.execute(
        select(state).where(
            state.c.tenant_id == tenant, state.c.subject_id == subject_id,
            state.c.purpose.in_(rules), state.c.channel == NO_CHANNEL,
        )
    )
    choices: dict[str, bool] = {}
    latest: datetime | None = None
    policy_version: str | None = None
    expiries: list[datetime] = []
    reprompt = False
    for row in rows:
        rule = rules[row.purpose]
        standing = Standing(row.event_id, row.status, row.captured_at, row.policy_version, row.purpose_version)
        if not is_effective(rule, standing, at):
            reprompt = True  # an expired grant: ask again
            continue
        choices[row.purpose] = row.status == "granted"
        if (expiry := expires_at(rule, standing)) is not None:
            expiries.append(expiry)
        if row.policy_version not in view.standing:
            reprompt = True  # chosen under terms that changed materially since
        if latest is None or row.captured_at > latest:
            latest, policy_version = row.captured_at, row.policy_version
    reprompt = reprompt or any(key not in choices for key in rules)
    return CookieConsentsOut(
        choices=choices, policy_version=policy_version, expires_at=min(expiries, default=None), reprompt=reprompt
    )


async def record(
    session: AsyncSession,
    keys: IdentifierKeys,
    *,
    tenant: str,
    banner_key: str,
    body: CookieConsentIn,
    visit: Visit,
    idempotency_key: str | None,
) -> tuple[int, dict]:
    """Record a device's choices (and, under GPC, the withdrawals it implies); the status code and answer.

    Without a device id a new one is issued; the answer carries it (a replay, the first one's).
    """
    if body.device_id is not None:
        require_issued(keys, tenant=tenant, device_id=body.device_id, loc=["body", "device_id"])
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
    for key, on in body.choices.items():
        if key not in view.rules:
            raise Unprocessable(f"'{key}' is not a cookie category of this banner", loc=["body", "choices", key])
        check_status(view.rules[key], "granted" if on else "withdrawn", loc=["body", "choices", key])
    if body.policy_version not in view.published:
        raise Unprocessable("unknown policy_version: reload the banner", loc=["body", "policy_version"])
    chosen = [(key, NO_CHANNEL, "granted" if on else "withdrawn") for key, on in body.choices.items()]
    # GPC: an advertising or sharing category the visitor did not explicitly turn on is withdrawn.
    implied = [
        (key, NO_CHANNEL, "withdrawn")
        for key in sorted(view.gpc)
        if visit.gpc and body.choices.get(key) is not True
    ]
    chosen = [c for c in chosen if c[0] not in {key for key, _, _ in implied}]
    if not chosen and not implied:
        raise Unprocessable("choose at least one cookie category", loc=["body", "choices"])

    device_id = body.device_id or keys.new_device_id(tenant)
    subject_id = await subjects.resolve(
        session, keys, tenant=tenant, ref=SubjectRef(device_id=device_id), identifiers=None
    )
    now = utcnow()
    page = page_without_query(body.page_url or visit.referer)
    evidence = {
        "ip_truncated": truncated_ip(visit.ip),
        "user_agent": (visit.user_agent or "")[:512] or None,
        "page_url": page,
        "gpc": visit.gpc,
        "banner_key": banner_key,
    }
    common: dict[str, Any] = dict(
        tenant=tenant, subject_id=subject_id, rules=view.rules, captured_at=None, recorded_at=now, source=SOURCE,
        policy_version=body.policy_version, collection_point=page[:200] if page else None,
        actor=f"banner:{banner_key[:11]}", evidence=evidence,
    )
    events = [
        *consents.new_events(decisions=chosen, method="banner", **common),
        *consents.new_events(decisions=implied, method="gpc", **common),
    ]
    await consents.append(session, events, view.rules)
    standing = await _status(session, tenant=tenant, view=view, subject_id=subject_id, at=now)
    answer = CookieConsentsRecorded(
        **standing.model_dump(),
        device_id=device_id,
        events=[
            CookieEventOut(event_id=e["event_id"], purpose=e["purpose"], status=e["status"], method=e["method"])
            for e in events
        ],
    ).model_dump(mode="json")
    if idempotency_key is not None:
        await consents.store_idempotent_answer(
            session, tenant=tenant, key=scoped_key, outcome=consents.Outcome(201, answer)
        )
    return 201, answer
