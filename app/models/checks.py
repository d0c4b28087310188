"""Check requests and answers: may we contact this subject for this purpose on this channel?"""

import uuid
from datetime import datetime

from pydantic import Field as Bounds
from sqlmodel import SQLModel

from app.models.common import Channel, PurposeKey, Schema, SubjectRef


class CheckIn(Schema):
    subject: SubjectRef
    purpose: PurposeKey
    channel: Channel | None = None


class BatchCheckIn(Schema):
    checks: list[CheckIn] = Bounds(max_length=10_000)


class ConsentBasis(SQLModel):
    event_id: uuid.UUID
    status: str
    captured_at: datetime
    expires_at: datetime | None
    policy_version: str | None


class CheckOut(SQLModel):
    allowed: bool
    reason: str
    subject_id: uuid.UUID | None
    purpose: str
    channel: str | None
    legal_basis: str
    consent: ConsentBasis | None
    checked_at: datetime


class SignedCheckOut(CheckOut):
    # Only with POST /v1/checks?receipt=true: a compact JWS over the rest of this answer (docs/receipts.md).
    receipt: str | None = None


class CheckError(SQLModel):
    """A batch item that could not be checked: a bad email or phone, an unknown purpose, a foreign channel."""

    error: str


class BatchCheckOut(SQLModel):
    results: list[CheckOut | CheckError]
