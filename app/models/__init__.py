"""All tables, imported so that SQLModel.metadata knows them (Alembic and tests rely on it)."""

from app.models.audit import AccessLogEntry, AuditCheckpoint, CheckpointHead, LedgerChain
from app.models.banners import Banner, BannerKey, BannerPolicy
from app.models.base import SQLModel
from app.models.changes import ConsentChange
from app.models.consents import ConsentEvent, ConsentState, IdempotencyRecord, ImportedRecord
from app.models.notifications import OutboxEvent, Webhook, WebhookCursor, WebhookDelivery
from app.models.purposes import Purpose, PurposeVersion
from app.models.requests import DataRequest, LegalHold, RequestLogEntry
from app.models.subjects import Subject, SubjectIdentifier
from app.models.suppressions import Suppression, SuppressionChain, SuppressionEvent
from app.models.tenants import Tenant

metadata = SQLModel.metadata

__all__ = [
    "AccessLogEntry",
    "AuditCheckpoint",
    "Banner",
    "BannerKey",
    "BannerPolicy",
    "CheckpointHead",
    "ConsentChange",
    "ConsentEvent",
    "ConsentState",
    "DataRequest",
    "IdempotencyRecord",
    "ImportedRecord",
    "LedgerChain",
    "LegalHold",
    "OutboxEvent",
    "Purpose",
    "PurposeVersion",
    "RequestLogEntry",
    "Subject",
    "SubjectIdentifier",
    "Suppression",
    "SuppressionChain",
    "SuppressionEvent",
    "Tenant",
    "Webhook",
    "WebhookCursor",
    "WebhookDelivery",
    "metadata",
]
