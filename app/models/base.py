"""Shared column types and the metadata naming convention (stable constraint names on SQLite and PostgreSQL)."""

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
import uuid_utils.compat
from sqlalchemy.types import TypeDecorator
from sqlmodel import SQLModel

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite keeps no offset)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_id() -> uuid.UUID:
    """A new id for a subject or an event: a version 7 UUID (RFC 9562), its first 48 bits the millisecond it was
    made, the other 74 random. Ids made one after another sort one after another, so each index keyed by them grows
    at its right edge: a random (version 4) id puts every insert on a page anywhere in the index, which PostgreSQL
    must read, dirty and write whole to its WAL after every checkpoint (measured on a 1M import: 495k full-page
    images against 106k). The moment an id gives away is the one its row records anyway (created_at, recorded_at)."""
    return uuid_utils.compat.uuid7()


# A 64-bit sequence; SQLite only autoincrements an INTEGER PRIMARY KEY.
BigSerial = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


def table_of(model: type[SQLModel]) -> sa.Table:
    """The Core table of a table model, for statements that bypass the ORM."""
    # SQLModel's metaclass sets __table__ on table=True classes but declares it nowhere mypy can see.
    return model.__table__  # type: ignore[attr-defined]
