"""The cookie banner: publishable keys, banner settings and policy versions, and what the banner shows."""

import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast
from urllib.parse import urlsplit

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db import Database
from app.errors import Conflict, Unprocessable
from app.models import Banner, BannerKey, BannerPolicy, Purpose
from app.models.banners import BannerIn, BannerOut, CategoryOut, PolicyOut, PublicBannerOut
from app.models.base import table_of, utcnow
from app.services.kit import Versioned, upsert
from app.services.purposes import Rule, bump, to_rule

V = TypeVar("V")
COOKIES = "cookies"
DEMO_TENANT = "demo"
FIRST_POLICY = "1"
DEFAULT_TEXTS = {
    "title": "Cookies on this site",
    "description": (
        "We use cookies that the site needs to work, and, only if you agree, cookies for analytics and advertising. "
        "You can change your mind at any time through the cookie settings link."
    ),
    "accept_all": "Accept all",
    "reject_all": "Reject all",
    "manage": "Manage choices",
    "save": "Save choices",
    "necessary_title": "Strictly necessary",
    "necessary_description": "Needed for the site to work, such as remembering this choice.",
    "gpc_note": "Your browser sends a Global Privacy Control signal: advertising and sharing stay off unless you turn them on.",
    "privacy_link": "Privacy policy",
    "error": "Your choice could not be saved. Please try again.",
}
# Google Consent Mode v2 signals, by what a cookie category is for (its key and title).
_ADVERTISING = re.compile(r"advert|marketing|targeting|\bads?\b|social|shar", re.IGNORECASE)
_ANALYTICS = re.compile(r"analytic|statistic|measure|performance", re.IGNORECASE)
_FUNCTIONAL = re.compile(r"function|preference|personali", re.IGNORECASE)
AD_SIGNALS = ["ad_storage", "ad_user_data", "ad_personalization"]


def normalise_origin(value: str) -> str:
    """`scheme://host[:port]`, lower-cased, default port dropped; ValueError for anything else."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"an origin is http(s)://host[:port], not {value!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"an origin has no path, query, fragment or user: {value!r}")
    port = parts.port  # ValueError for a bad port
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


async def create_key(session: AsyncSession, *, tenant: str, origins: list[str]) -> str:
    """A new publishable key for `origins` (normalised); the tenant's banner is set up on its first key."""
    if not origins:
        raise ValueError("a key needs at least one origin")
    normal = sorted({normalise_origin(origin) for origin in origins})
    key = "pk_" + secrets.token_urlsafe(24)
    session.add(BannerKey(key=key, tenant_id=tenant, origins=normal))
    await ensure(session, tenant=tenant)
    await session.flush()
    return key


async def list_keys(session: AsyncSession, *, tenant: str) -> list[BannerKey]:
    """The tenant's keys, newest first, revoked ones included."""
    rows = await session.execute(
        select(BannerKey).where(col(BannerKey.tenant_id) == tenant).order_by(col(BannerKey.created_at).desc())
    )
    return list(rows.scalars())


async def revoke_key(session: AsyncSession, *, key: str) -> bool:
    """Stop a key at once; False when there is no such active key."""
    done = await session.execute(
        update(BannerKey).where(col(BannerKey.key) == key, col(BannerKey.revoked_at).is_(None)).values(revoked_at=utcnow())
    )
    # An UPDATE's result is a CursorResult, which has the rowcount (execute is typed as returning any Result).
    return cast(CursorResult, done).rowcount == 1


async def active_key(session: AsyncSession, *, key: str) -> BannerKey | None:
    """The key, unless unknown or revoked."""
    found = await session.get(BannerKey, key)
    return found if found is not None and found.revoked_at is None else None


async def demo_key(session: AsyncSession, *, tenant: str, origin: str) -> str | None:
    """The newest active key of `tenant` that `origin` may use."""
    for key in await list_keys(session, tenant=tenant):
        if key.revoked_at is None and origin in key.origins:
            return key.key
    return None


async def ensure(session: AsyncSession, *, tenant: str) -> None:
    """Create the tenant's banner with the default texts and policy version "1" unless it has one."""
    await session.execute(
        upsert(session, table_of(Banner))
        .values(tenant_id=tenant, policy_version=FIRST_POLICY, texts={}, updated_at=utcnow())
        .on_conflict_do_nothing(index_elements=["tenant_id"])
    )
    await session.execute(
        upsert(session, table_of(BannerPolicy))
        .values(tenant_id=tenant, policy_version=FIRST_POLICY, material=True, published_at=utcnow())
        .on_conflict_do_nothing(index_elements=["tenant_id", "policy_version"])
    )


async def current(session: AsyncSession, *, tenant: str) -> Banner:
    """The tenant's banner as stored, or (read-only) the default one `ensure` would store."""
    banner = await session.get(Banner, tenant)
    return banner if banner is not None else Banner(tenant_id=tenant, policy_version=FIRST_POLICY, texts={}, updated_at=None)


async def policies(session: AsyncSession, *, tenant: str) -> list[BannerPolicy]:
    """Every policy version the tenant published, oldest first (the default first one when it published none)."""
    rows = await session.execute(
        select(BannerPolicy)
        .where(col(BannerPolicy.tenant_id) == tenant)
        .order_by(col(BannerPolicy.published_at), col(BannerPolicy.policy_version))
    )
    return list(rows.scalars()) or [
        BannerPolicy(tenant_id=tenant, policy_version=FIRST_POLICY, material=True, published_at=None)
    ]


def standing_versions(published: list[BannerPolicy]) -> set[str]:
    """The policy versions whose choices still stand: the last material one and every one published after it."""
    standing: set[str] = set()
    for policy in published:
        if policy.material:
            standing = set()
        standing.add(policy.policy_version)
    return standing


async def settings(session: AsyncSession, *, tenant: str) -> BannerOut:
    """The tenant's banner settings with its policy history."""
    banner = await current(session, tenant=tenant)
    return _settings_out(banner, await policies(session, tenant=tenant))


async def put(session: AsyncSession, *, tenant: str, body: BannerIn) -> BannerOut:
    """Change texts, links or GPC coverage; a new policy_version is published (material: everyone is asked again)."""
    await ensure(session, tenant=tenant)
    # One writer at a time per tenant: the policy history is ordered by publication.
    banner = (
        await session.execute(select(Banner).where(col(Banner.tenant_id) == tenant).with_for_update())
    ).scalar_one()
    if body.gpc_purposes is not None:
        known = {p.key for p in await _cookie_purposes(session, tenant=tenant)}
        for index, key in enumerate(body.gpc_purposes):
            if key not in known:
                raise Unprocessable(f"'{key}' is not a cookie purpose of this tenant", loc=["body", "gpc_purposes", index])
    if body.policy_version != banner.policy_version:
        if await session.get(BannerPolicy, (tenant, body.policy_version)) is not None:
            raise Conflict(f"policy version '{body.policy_version}' was published before; versions are not reused")
        session.add(BannerPolicy(tenant_id=tenant, policy_version=body.policy_version, material=body.material))
    banner.policy_version = body.policy_version
    banner.texts = body.texts.model_dump(exclude_none=True)
    banner.privacy_policy_url = body.privacy_policy_url
    banner.gpc_purposes = body.gpc_purposes
    banner.updated_at = utcnow()
    session.add(banner)
    await bump(session, tenant=tenant)
    await session.flush()
    return _settings_out(banner, await policies(session, tenant=tenant))


def _settings_out(banner: Banner, published: list[BannerPolicy]) -> BannerOut:
    return BannerOut(
        policy_version=banner.policy_version,
        texts={**DEFAULT_TEXTS, **banner.texts},
        privacy_policy_url=banner.privacy_policy_url,
        gpc_purposes=banner.gpc_purposes,
        policies=[PolicyOut.model_validate(p, from_attributes=True) for p in published],
        updated_at=banner.updated_at,
    )


async def _cookie_purposes(session: AsyncSession, *, tenant: str) -> list[Purpose]:
    rows = await session.execute(
        select(Purpose).where(col(Purpose.tenant_id) == tenant, col(Purpose.category) == COOKIES).order_by(col(Purpose.key))
    )
    return list(rows.scalars())


def covered_by_gpc(banner: Banner, purpose: Purpose) -> bool:
    """Whether a GPC signal withdraws this category: the tenant's list, else advertising and third-party sharing."""
    if banner.gpc_purposes is not None:
        return purpose.key in banner.gpc_purposes
    return purpose.third_party is not None or bool(_ADVERTISING.search(f"{purpose.key} {purpose.title}"))


def consent_mode(banner: Banner, purpose: Purpose) -> list[str]:
    """The Google Consent Mode v2 signals a category controls."""
    named = f"{purpose.key} {purpose.title}"
    if covered_by_gpc(banner, purpose) or _ADVERTISING.search(named):
        return list(AD_SIGNALS)
    if _ANALYTICS.search(named):
        return ["analytics_storage"]
    if _FUNCTIONAL.search(named):
        return ["functionality_storage", "personalization_storage"]
    return []


async def categories(session: AsyncSession, *, tenant: str) -> tuple[Banner, list[Purpose]]:
    """The tenant's banner and its categories (purposes of category `cookies`)."""
    return await current(session, tenant=tenant), await _cookie_purposes(session, tenant=tenant)


@dataclass(frozen=True)
class BannerView:
    """Everything the public endpoints need of a tenant's banner, read in three queries, kept as plain data."""

    config: PublicBannerOut
    rules: dict[str, Rule]  # of the categories, by key
    gpc: frozenset[str]  # categories a GPC signal withdraws
    published: frozenset[str]  # every policy version ever published
    standing: frozenset[str]  # versions whose choices still stand (since the last material change)


async def load_view(session: AsyncSession, *, tenant: str) -> BannerView:
    """The tenant's banner as the public endpoints see it, now."""
    banner, purposes = await categories(session, tenant=tenant)
    config = _config(banner, purposes)
    published = await policies(session, tenant=tenant)
    return BannerView(
        config=config,
        rules={p.key: to_rule(p) for p in purposes},
        gpc=frozenset(c.key for c in config.categories if c.gpc),
        published=frozenset(p.policy_version for p in published),
        standing=frozenset(standing_versions(published)),
    )


class _Recent(Generic[V]):
    """Values by key, each remembered for `ttl` seconds (0: not at all). Bounded: past `most` keys it starts over,
    so a flood of distinct keys (unknown ones are remembered too) cannot take much memory."""

    def __init__(self, *, ttl: float, most: int = 10_000) -> None:
        self.ttl = ttl
        self.most = most
        self._values: dict[str, tuple[float, V]] = {}

    async def get(self, key: str, load: Callable[[], Awaitable[V]]) -> V:
        now = time.monotonic()
        cached = self._values.get(key)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        value = await load()
        if self.ttl > 0:
            if len(self._values) >= self.most:
                self._values.clear()
            self._values[key] = (now, value)
        return value

    def forget(self, key: str) -> None:
        self._values.pop(key, None)


class ViewCache:
    """Banner views remembered for `ttl` seconds: every page view reads one, they seldom change. A change made
    through this process is seen at once (`forget`); one made through another process within `ttl`."""

    def __init__(self, *, ttl: float) -> None:
        self._views: _Recent[BannerView] = _Recent(ttl=ttl)
        # Views by the tenant config version they were read at: exact across workers (for the banner's POST).
        self.versioned: Versioned[BannerView] = Versioned()

    async def get(self, session: AsyncSession, *, tenant: str) -> BannerView:
        return await self._views.get(tenant, lambda: load_view(session, tenant=tenant))

    def forget(self, tenant: str) -> None:
        self._views.forget(tenant)


def _config(banner: Banner, purposes: list[Purpose]) -> PublicBannerOut:
    """What the banner shows: texts, categories, the policy version in force."""
    return PublicBannerOut(
        policy_version=banner.policy_version,
        texts={**DEFAULT_TEXTS, **banner.texts},
        privacy_policy_url=banner.privacy_policy_url,
        categories=[
            CategoryOut(
                key=p.key, title=p.title, description=p.description,
                gpc=covered_by_gpc(banner, p), consent_mode=consent_mode(banner, p),
            )
            for p in purposes
        ],
    )



@dataclass(frozen=True)
class KeyGrant:
    """What an active publishable key allows: one tenant's banner, from these origins."""

    key: str
    tenant: str
    origins: frozenset[str]


class KeyDirectory:
    """Active publishable keys, each remembered for `ttl` seconds: every page view asks, keys seldom change.
    A revoked key stops working within `ttl`."""

    def __init__(self, database: Database, *, ttl: float) -> None:
        self.database = database
        self._seen: _Recent[KeyGrant | None] = _Recent(ttl=ttl)

    async def grant(self, key: str) -> KeyGrant | None:
        return await self._seen.get(key, lambda: self._read(key))

    async def _read(self, key: str) -> KeyGrant | None:
        table = table_of(BannerKey)
        async with self.database.reading() as connection:
            row = (
                await connection.execute(
                    select(table.c.tenant_id, table.c.origins).where(table.c.key == key, table.c.revoked_at.is_(None))
                )
            ).first()
        return KeyGrant(key, row.tenant_id, frozenset(row.origins)) if row is not None else None
