"""Telling other systems: webhook endpoints (webhooks), the outbox of events the feed does not hold (outbox), SSRF
rules for receivers (urls), enqueueing and sending deliveries (dispatch), and the scheduled loop (jobs)."""

from . import dispatch, jobs, outbox, urls, webhooks
from .dispatch import Sender
from .outbox import emit

__all__ = ["Sender", "dispatch", "emit", "jobs", "outbox", "urls", "webhooks"]
