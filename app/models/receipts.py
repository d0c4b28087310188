"""Consent receipts (ISO/IEC TS 27560 consent record fields) and the JWKS that verifies them."""

import uuid
from datetime import datetime
from typing import Literal

from pydantic import Field
from sqlmodel import SQLModel

RECEIPT_SCHEMA_VERSION = "consentd-receipt/1"
CONFORMS_TO = "ISO/IEC TS 27560:2023"


class Controller(SQLModel):
    """The PII controller: the tenant."""

    id: str
    name: str


class ReceiptPurpose(SQLModel):
    """The purpose as the person saw it: its version at the time of the decision, not today's text."""

    purpose_id: str
    purpose_version: int
    title: str
    description: str
    category: str
    lawful_basis: str
    channel: str | None
    # Third parties the data goes to under this purpose (27560: recipients).
    recipients: list[str]


class ConsentReceipt(SQLModel):
    """One consent event as an ISO/IEC TS 27560 consent record (docs/receipts.md maps each field)."""

    schema_version: str = Field(examples=[RECEIPT_SCHEMA_VERSION])
    conforms_to: str = Field(examples=[CONFORMS_TO])
    record_id: uuid.UUID = Field(description="the consent event's event_id")
    pii_principal_id: uuid.UUID = Field(description="the subject_id; never an email or phone number")
    controller: Controller
    jurisdiction: str
    purposes: list[ReceiptPurpose]
    state: Literal["given", "withdrawn"]
    captured_at: datetime = Field(description="when the person decided (27560: event time)")
    recorded_at: datetime = Field(description="when consentd recorded it")
    expires_at: datetime | None = Field(description="when a grant stops counting (captured_at + the purpose's lifespan)")
    policy_version: str | None = Field(description="the privacy notice's version the person was shown")
    collection_point: str | None
    collection_method: str = Field(description="api, import, banner, gpc (Global Privacy Control) or link")
    source: str
    recorded_by: str = Field(description="the client that recorded it")
    ledger_hash: str | None = Field(description="the event's hash in the subject's hash chain, when the ledger has one")


class ConsentReceiptOut(ConsentReceipt):
    jws: str = Field(description="a compact JWS whose payload is this document without `jws`, plus `iss` and `iat`")


class PublicJwk(SQLModel):
    """A public key (RFC 7517): EC P-256 (crv, x, y) or RSA (n, e)."""

    kty: Literal["EC", "RSA"]
    kid: str
    alg: Literal["ES256", "RS256"]
    use: Literal["sig"]
    crv: str | None = None
    x: str | None = None
    y: str | None = None
    n: str | None = None
    e: str | None = None


class Jwks(SQLModel):
    keys: list[PublicJwk]
