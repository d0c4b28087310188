"""The cookie banner: publishable keys and settings (banners), cookie choices, device links, public rate limits."""

from . import banners, cookie_consents, devices
from .banners import DEMO_TENANT, KeyDirectory, KeyGrant, ViewCache, normalise_origin
from .throttle import Throttle

__all__ = [
    "banners",
    "cookie_consents",
    "devices",
    "DEMO_TENANT",
    "KeyDirectory",
    "KeyGrant",
    "Throttle",
    "ViewCache",
    "normalise_origin",
]
