"""Tenants: every other row belongs to one, named by its key (the JWT's `tenant` claim)."""

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.models.base import UTCDateTime, utcnow


class Tenant(SQLModel, table=True):
    __tablename__ = "tenants"

    key: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    # Moved by every change of the tenant's purposes or banner (purposes.bump): in-process caches of rules and
    # banner views compare it with the version they hold, in a statement they run anyway (services/purposes/cache.py).
    config_version: int = Field(default=0, sa_type=sa.BigInteger, nullable=False, sa_column_kwargs={"server_default": "0"})
