"""Telling other systems: webhook endpoints (webhooks), the outbox of events the feed does not hold (outbox), SSRF
rules for receivers (urls), enqueueing and sending deliveries (dispatch; the loop that runs it is services/scheduled)."""

from . import dispatch, outbox, urls, webhooks
from .dispatch import Sender
from .outbox import emit

__all__ = ["Sender", "dispatch", "emit", "outbox", "urls", "webhooks"]
