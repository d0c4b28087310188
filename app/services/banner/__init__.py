"""The cookie banner: publishable keys and settings (banners), cookie choices, device links, public rate limits."""

from . import banners, cookie_consents, devices
from .banners import DEMO_TENANT, KeyDirectory, KeyGrant, ViewCache, normalise_origin
from .throttle import Throttle

__all__ = [
    "DEMO_TENANT",
    "KeyDirectory",
    "KeyGrant",
    "Throttle",
    "ViewCache",
    "banners",
    "cookie_consents",
    "devices",
    "normalise_origin",
]
