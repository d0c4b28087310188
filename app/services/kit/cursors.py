"""Opaque page cursors: a few bytes in URL-safe base64 without padding (each list parses its own bytes)."""

import base64
from collections.abc import Sequence
from datetime import datetime

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from app.errors import Unprocessable
from app.models.common import utc_in_range


def pack(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unpack(cursor: str) -> bytes:
    """The bytes of a cursor `pack` wrote; ValueError (binascii.Error is one) for anything else."""
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))


def pack_moment(at: datetime, seq: int) -> str:
    """A cursor naming a row of a list ordered by (a timestamp, seq)."""
    return pack(orjson.dumps([at.isoformat(), seq]))


def unpack_moment(cursor: str) -> tuple[datetime, int]:
    """The (timestamp, seq) a `pack_moment` cursor names; 422 for anything this service could not have issued."""
    try:
        at, seq = orjson.loads(unpack(cursor))
        moment = datetime.fromisoformat(at)
        # type(), not isinstance(): JSON true decodes to a bool, which is an int in Python (and would page from 1).
        if moment.tzinfo is None or type(seq) is not int or not 0 < seq < 2**63:
            raise ValueError("out of range")
        return utc_in_range(moment), seq
    except (ValueError, TypeError, OverflowError) as exc:  # binascii.Error is a ValueError
        raise Unprocessable("invalid cursor", loc=["query", "cursor"]) from exc


async def moment_page(
    session: AsyncSession, query: Select, *, at: sa.Column, seq: sa.Column, cursor: str | None, limit: int
) -> tuple[Sequence[RowMapping], str | None]:
    """A page of `query` in (at, seq) order after `cursor`, and the cursor of the next page (None: this is the last).
    `query` must select `at` and `seq`."""
    if cursor is not None:
        moment, after = unpack_moment(cursor)
        query = query.where(sa.or_(at > moment, sa.and_(at == moment, seq > after)))
    rows = (await session.execute(query.order_by(at, seq).limit(limit + 1))).mappings().all()
    page = rows[:limit]
    return page, pack_moment(page[-1][at.key], page[-1][seq.key]) if len(rows) > limit else None
