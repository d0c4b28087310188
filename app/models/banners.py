"""The cookie banner: publishable keys, each tenant's banner settings and the policy versions it published."""

import uuid
from datetime import datetime
from typing import Annotated

import sqlalchemy as sa
from pydantic import Field as Bounds
from pydantic import StrictBool, StringConstraints
from sqlmodel import Field, SQLModel

from app.models.base import UTCDateTime, utcnow
from app.models.common import PurposeKey, Schema, text

DEVICE_ID = r"^[A-Za-z0-9_-]{16,128}$"
DeviceId = Annotated[str, StringConstraints(pattern=DEVICE_ID)]


class BannerKey(SQLModel, table=True):
    """A publishable key: public (it sits in web pages), good only from its origins, only for cookie choices."""

    __tablename__ = "banner_keys"

    key: str = Field(primary_key=True, max_length=64)
    tenant_id: str = Field(foreign_key="tenants.key", index=True, max_length=64)
    origins: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Banner(SQLModel, table=True):
    """A tenant's banner: the policy version in force, texts that override the defaults, GPC coverage."""

    __tablename__ = "banners"

    tenant_id: str = Field(primary_key=True, foreign_key="tenants.key", max_length=64)
    policy_version: str = Field(max_length=64)
    texts: dict = Field(default_factory=dict, sa_type=sa.JSON)
    privacy_policy_url: str | None = Field(default=None, max_length=2000)
    # Purposes a GPC signal withdraws when not explicitly granted; None: chosen by category (services/banner/banners.py).
    gpc_purposes: list[str] | None = Field(default=None, sa_type=sa.JSON)
    # Never NULL when stored; None on the unsaved default banner a tenant without one is shown (banners.current).
    updated_at: datetime | None = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class BannerPolicy(SQLModel, table=True):
    """Every policy version a tenant's banner has shown, and whether it changed the terms (asks everyone again)."""

    __tablename__ = "banner_policies"

    tenant_id: str = Field(primary_key=True, foreign_key="tenants.key", max_length=64)
    policy_version: str = Field(primary_key=True, max_length=64)
    material: bool
    # Never NULL when stored; None on the unsaved first policy a tenant without a banner is shown (banners.policies).
    published_at: datetime | None = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class BannerTexts(Schema):
    """What the banner says; each one left out keeps the default."""

    title: Annotated[str, text(200, 1)] | None = None
    description: Annotated[str, text(2000, 1)] | None = None
    accept_all: Annotated[str, text(60, 1)] | None = None
    reject_all: Annotated[str, text(60, 1)] | None = None
    manage: Annotated[str, text(60, 1)] | None = None
    save: Annotated[str, text(60, 1)] | None = None
    necessary_title: Annotated[str, text(200, 1)] | None = None
    necessary_description: Annotated[str, text(2000, 1)] | None = None
    gpc_note: Annotated[str, text(500, 1)] | None = None
    privacy_link: Annotated[str, text(100, 1)] | None = None
    error: Annotated[str, text(300, 1)] | None = None


HttpUrl = Annotated[str, StringConstraints(max_length=2000, pattern=r"^https?://[^\s\x00]+$")]


class BannerIn(Schema):
    policy_version: Annotated[str, text(64, 1)]
    material: bool = True
    texts: BannerTexts = BannerTexts()
    privacy_policy_url: HttpUrl | None = None
    gpc_purposes: list[PurposeKey] | None = Bounds(default=None, max_length=100)


class PolicyOut(SQLModel):
    policy_version: str
    material: bool
    # None for the first version of a banner never configured.
    published_at: datetime | None


class BannerOut(SQLModel):
    policy_version: str
    texts: dict[str, str]
    privacy_policy_url: str | None
    gpc_purposes: list[str] | None
    policies: list[PolicyOut]
    updated_at: datetime | None


class CategoryOut(SQLModel):
    key: str
    title: str
    description: str
    gpc: bool
    consent_mode: list[str]


class PublicBannerOut(SQLModel):
    policy_version: str
    texts: dict[str, str]
    privacy_policy_url: str | None
    categories: list[CategoryOut]


class CookieConsentIn(Schema):
    # Left out on a device's first choice: consentd issues the id and answers it.
    device_id: DeviceId | None = None
    choices: dict[PurposeKey, StrictBool] = Bounds(max_length=50)
    policy_version: Annotated[str, text(64, 1)]
    page_url: HttpUrl | None = None


class CookieEventOut(SQLModel):
    event_id: uuid.UUID
    purpose: str
    status: str
    method: str


class CookieConsentsOut(SQLModel):
    choices: dict[str, bool]
    policy_version: str | None
    expires_at: datetime | None
    reprompt: bool


class CookieConsentsRecorded(CookieConsentsOut):
    device_id: str
    events: list[CookieEventOut]


class DeviceLinkIn(Schema):
    device_id: DeviceId


class DeviceLinkOut(SQLModel):
    subject_id: uuid.UUID
    merged_subject_id: uuid.UUID | None
    events_merged: int
