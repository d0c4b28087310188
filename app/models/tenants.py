"""Tenants: every other row belongs to one, named by its key (the JWT's `tenant` claim)."""

from datetime import datetime

from sqlmodel import Field, SQLModel

from app.models.base import UTCDateTime, utcnow


class Tenant(SQLModel, table=True):
    __tablename__ = "tenants"

    key: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
