"""Data-subject requests (access, portability, erasure, rectification, restriction, objection) on the statutory
clock, each with an append-only, hash-chained log of what was done (services/requests/)."""

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import ConfigDict, model_validator
from pydantic import Field as Bounds
from sqlmodel import Field, SQLModel

from app.models.base import BigSerial, UTCDateTime, new_id, utcnow
from app.models.common import PURPOSE_KEY, Schema, SubjectRef, Timestamp, text
from app.models.subjects import subject_of_tenant

RequestType = Literal["access", "portability", "erasure", "rectification", "restriction", "objection"]
Status = Literal["pending_verification", "awaiting_clarification", "in_progress", "completed", "refused"]
ReceivedVia = Literal["email", "post", "phone", "web", "in_person"]
VerificationMethod = Literal["email_link", "account", "document", "knowledge", "in_person"]
RefusalReason = Literal["manifestly_unfounded", "excessive", "identity_not_verified", "exempt"]
# The rights that hand over or change personal data: the person's identity is checked first, and the clock starts then.
NEEDS_VERIFICATION = frozenset({"access", "portability", "erasure", "rectification"})
OPEN = ("pending_verification", "awaiting_clarification", "in_progress")
# A note, a question, a reason's detail: enough for a paragraph, bounded so the log stays small.
Note = Annotated[str, text(2000, 1)]
# Sorts the requests whose clock has not started (no due date yet) after every dated one.
NOT_DUE = date(9999, 12, 31)


class DataRequest(SQLModel, table=True):
    """One request, as it stands. Its log (RequestLogEntry) says how it got there."""

    __tablename__ = "data_requests"
    __table_args__ = (
        subject_of_tenant(),
        # The open requests, soonest due first (GET /v1/requests, `consentd requests list`).
        sa.Index("ix_data_requests_due", "tenant_id", "due_sort", "id"),
        # The request a person's verification link names (by the SHA-256 of its token).
        sa.Index("ix_data_requests_link", "link_hash", unique=True),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.key", max_length=64)
    type: str = Field(max_length=16)
    status: str = Field(max_length=24)
    subject_id: uuid.UUID | None = None
    # The identifier the request named (blind index and type), kept for the person consentd has never seen.
    id_type: str | None = Field(default=None, max_length=16)
    id_hash: str | None = Field(default=None, max_length=64)
    # That identifier sealed: to write to the person, and to suppress a stranger who objects to direct marketing.
    value_sealed: str | None = Field(default=None, sa_type=sa.Text)
    received_at: datetime = Field(sa_type=UTCDateTime)
    received_via: str | None = Field(default=None, max_length=16)
    verified_method: str | None = Field(default=None, max_length=16)
    verified_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    clock_started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    due_at: date | None = None
    extended_due_at: date | None = None
    # The day the due date is answered by (the extended one, if any); NOT_DUE while the clock has not started.
    due_sort: date = Field(default=NOT_DUE)
    paused_days: int = 0
    # The UK day the clock was paused for a clarification; None while it runs.
    paused_on: date | None = None
    details: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    outcome: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    # The head of the request's log: its length and last hash (the row lock orders the request's actions).
    log_length: int = 0
    log_head_hash: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    # The person's verification link (POST /v1/requests/{id}/verification-link): the SHA-256 of its token (the
    # token itself is never stored) and when it stops working. A new link replaces the one before.
    link_hash: str | None = Field(default=None, max_length=64)
    link_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # An erasure completed in part under legal holds: the rest runs when the last is released or lapses.
    waiting_on_holds: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    # When the request.due_soon event went out (7 days before the due date), once.
    due_soon_sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class RequestLogEntry(SQLModel, table=True):
    """One thing done to a request. Never updated, never deleted (the database refuses); one hash chain per request."""

    __tablename__ = "data_request_log"
    __table_args__ = (sa.Index("ix_data_request_log_request", "request_id", "chain_index", unique=True),)

    seq: int | None = Field(default=None, primary_key=True, sa_type=BigSerial)
    tenant_id: str = Field(foreign_key="tenants.key", max_length=64)
    request_id: uuid.UUID = Field(foreign_key="data_requests.id")
    chain_index: int
    at: datetime = Field(sa_type=UTCDateTime)
    action: str = Field(max_length=24)
    actor: str = Field(max_length=200)
    note: str | None = Field(default=None, sa_type=sa.Text)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class LegalHold(SQLModel, table=True):
    """A reason to keep a subject's data that an erasure must respect (a legal claim, misuse, a legal obligation, an
    open dispute), placed and released by the privacy team."""

    __tablename__ = "legal_holds"
    __table_args__ = (subject_of_tenant(), sa.Index("ix_legal_holds_subject", "tenant_id", "subject_id", "placed_at"))

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.key", max_length=64)
    subject_id: uuid.UUID
    reason: str = Field(max_length=24)
    note: str | None = Field(default=None, sa_type=sa.Text)
    until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    placed_at: datetime = Field(sa_type=UTCDateTime)
    placed_by: str = Field(max_length=200)
    released_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    released_by: str | None = Field(default=None, max_length=200)


HoldReason = Literal["legal_claim", "misuse", "legal_obligation", "open_dispute"]


class HoldIn(Schema):
    reason: HoldReason
    note: Note | None = None
    # When the hold lapses by itself, if it does.
    until: Timestamp | None = None


class HoldOut(Schema):
    hold_id: uuid.UUID
    reason: HoldReason
    note: str | None
    until: datetime | None
    placed_at: datetime
    released_at: datetime | None


class HoldsOut(Schema):
    holds: list[HoldOut]


class Verified(Schema):
    method: VerificationMethod
    # When the identity was checked; default now. It starts the clock of a request that needed it.
    at: Timestamp | None = None


class IdentifiersIn(Schema):
    """Identifiers to add (rectification): at least one."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    email: Annotated[str, text(320, 1)] | None = None
    phone: Annotated[str, text(64, 1)] | None = None
    external_id: Annotated[str, text(255, 1)] | None = None

    def items(self) -> list[tuple[str, str]]:
        return [(kind, value) for kind in ("external_id", "email", "phone") if (value := getattr(self, kind)) is not None]

    @model_validator(mode="after")
    def _some(self) -> "IdentifiersIn":
        if not self.items():
            raise ValueError("give at least one of email, phone, external_id")
        return self


class RectificationDetails(Schema):
    add: IdentifiersIn | None = None
    remove: Annotated[list[SubjectRef], Bounds(max_length=20, default_factory=list)]

    @model_validator(mode="after")
    def _something(self) -> "RectificationDetails":
        if self.add is None and not self.remove:
            raise ValueError("a rectification adds or removes at least one identifier")
        if any(ref.subject_id is not None for ref in self.remove):
            raise ValueError("remove names identifiers (email, phone, external_id, device_id), not a subject_id")
        return self


class RestrictionDetails(Schema):
    grounds: Literal["accuracy_contested", "unlawful_processing", "legal_claim", "objection_pending"] | None = None
    lift: Literal[True] | None = None

    @model_validator(mode="after")
    def _one(self) -> "RestrictionDetails":
        if (self.grounds is None) == (self.lift is None):
            raise ValueError('give either "grounds" (to restrict) or "lift": true (to lift a restriction)')
        return self


class ObjectionDetails(Schema):
    to: Literal["direct_marketing", "profiling", "purposes"]
    purposes: Annotated[list[Annotated[str, Bounds(pattern=PURPOSE_KEY)]], Bounds(min_length=1, max_length=100)] | None = None

    @model_validator(mode="after")
    def _purposes(self) -> "ObjectionDetails":
        if (self.to == "purposes") != (self.purposes is not None):
            raise ValueError('"purposes" lists the purposes objected to, with "to": "purposes" (and only then)')
        return self


DETAILS: dict[str, type[Schema] | None] = {
    "access": None, "portability": None, "erasure": None, "rectification": RectificationDetails,
    "restriction": RestrictionDetails, "objection": ObjectionDetails,
}


class RequestIn(Schema):
    type: RequestType
    subject: SubjectRef
    received_at: Timestamp | None = None
    received_via: ReceivedVia | None = None
    verified: Verified | None = None
    details: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _details(self) -> "RequestIn":
        model = DETAILS[self.type]
        if model is None:
            if self.details:
                raise ValueError(f"an {self.type} request takes no details")
            self.details = None
        elif self.details is None:
            raise ValueError(f"a {self.type} request needs its details")
        else:
            self.details = model.model_validate(self.details).model_dump(mode="json", exclude_none=True)
        return self


class VerificationLinkOut(Schema):
    # The page the person opens; the token is in the fragment, which browsers never send to a server (or a log).
    url: str
    expires_at: datetime


class LinkVerifyIn(Schema):
    """The person's confirmation from the verification page: the token of their link."""

    token: Annotated[str, Bounds(min_length=20, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")]


class LinkVerifiedOut(Schema):
    verified: bool
    type: RequestType


class VerifyIn(Schema):
    method: VerificationMethod
    note: Note | None = None


class ClarifyIn(Schema):
    question: Note


class ResumeIn(Schema):
    note: Note | None = None


class ExtendIn(Schema):
    reason: Note
    # When the person was told of the extension and why (Art. 12(3)): required, and not in the future.
    notified_at: Timestamp


class RefuseIn(Schema):
    reason: RefusalReason
    detail: Note


class LogEntryOut(Schema):
    at: datetime
    action: str
    actor: str
    note: str | None


class VerifiedOut(Schema):
    method: str
    at: datetime


class RequestOut(Schema):
    request_id: uuid.UUID
    type: RequestType
    status: Status
    subject_id: uuid.UUID | None
    received_at: datetime
    received_via: ReceivedVia | None
    clock_started_at: datetime | None
    due_at: date | None
    extended_due_at: date | None
    paused_days: int
    verified: VerifiedOut | None
    details: dict[str, Any] | None
    outcome: dict[str, Any] | None
    log: list[LogEntryOut]


class RequestPage(Schema):
    requests: list[RequestOut]
    next_cursor: str | None
