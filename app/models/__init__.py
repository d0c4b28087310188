"""All tables, imported so that SQLModel.metadata knows them (Alembic and tests rely on it)."""

from app.models.base import SQLModel
from app.models.consents import ConsentEvent, ConsentState, IdempotencyRecord
from app.models.purposes import Purpose, PurposeVersion
from app.models.subjects import Subject, SubjectIdentifier
from app.models.tenants import Tenant

metadata = SQLModel.metadata

__all__ = [
    "ConsentEvent",
    "ConsentState",
    "IdempotencyRecord",
    "Purpose",
    "PurposeVersion",
    "Subject",
    "SubjectIdentifier",
    "Tenant",
    "metadata",
]
