"""Field types shared by the API schemas: bounded strings without NUL bytes, timestamps, subject references."""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

NO_NUL = r"^[^\x00]*$"
PURPOSE_KEY = r"^[a-z0-9_]{1,64}$"

Channel = Literal["email", "sms", "phone", "post"]
CHANNELS: tuple[str, ...] = ("email", "sms", "phone", "post")
Status = Literal["granted", "withdrawn"]
PurposeKey = Annotated[str, StringConstraints(pattern=PURPOSE_KEY)]
# At most a century, so that date arithmetic stays far from datetime's limits.
Days = Annotated[int, Field(ge=1, le=36_500)]


def text(max_length: int, min_length: int = 0) -> StringConstraints:
    """Bounds for `Annotated[str, text(200, 1)]`: a bounded length and no NUL byte (PostgreSQL refuses them)."""
    # Metadata inside Annotated, not a returned Annotated type: a call in an annotation is no type to mypy.
    return StringConstraints(min_length=min_length, max_length=max_length, pattern=NO_NUL)


def utc_in_range(value: datetime) -> datetime:
    # Bounded so that date arithmetic (captured_at + lifespan) can never overflow.
    if not 1970 <= value.year <= 9000:
        raise ValueError("timestamp must be between 1970 and 9000")
    return value.astimezone(UTC)


Timestamp = Annotated[AwareDatetime, AfterValidator(utc_in_range)]


def _bounded_json(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Evidence as strict JSON both databases store: at most 16 KiB, no NUL, no lone surrogates, 64-bit integers,
    no NaN or infinities (they become null), nested at most 254 levels."""
    if value is None:
        return None
    try:
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise ValueError(f"evidence is not storable JSON: {exc}") from None
    if len(encoded) > 16_384:
        raise ValueError("evidence is larger than 16 KiB")
    if b"\\u0000" in encoded:
        raise ValueError("evidence may not contain NUL characters")
    return orjson.loads(encoded)


Evidence = Annotated[dict[str, Any] | None, AfterValidator(_bounded_json)]


class Schema(BaseModel):
    """Base of request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


IDENTIFIER_TYPES: tuple[str, ...] = ("external_id", "email", "phone", "device_id")


class Identifiers(Schema):
    """Identifiers to attach to a subject, at most one of each type per request."""

    external_id: Annotated[str, text(255, 1)] | None = None
    email: Annotated[str, text(320, 1)] | None = None
    phone: Annotated[str, text(64, 1)] | None = None
    device_id: Annotated[str, text(128, 1)] | None = None

    def items(self) -> list[tuple[str, str]]:
        return [(kind, value) for kind in IDENTIFIER_TYPES if (value := getattr(self, kind)) is not None]


class SubjectRef(Identifiers):
    """Exactly one way of naming a subject: its id or one of its identifiers."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1, "maxProperties": 1})

    subject_id: UUID | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "SubjectRef":
        given = len(self.items()) + (self.subject_id is not None)
        if given != 1:
            raise ValueError("give exactly one of subject_id, external_id, email, phone, device_id")
        return self

    def kind_and_value(self) -> tuple[str, str]:
        if self.subject_id is not None:
            return "subject_id", str(self.subject_id)
        return self.items()[0]


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """An RFC 9457 problem document, the body of every error."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[ValidationIssue] | None = None


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for errors answered as application/problem+json."""
    schema = {"$ref": "#/components/schemas/Problem"}
    return {status: {"model": Problem, "content": {"application/problem+json": {"schema": schema}}} for status in statuses}
