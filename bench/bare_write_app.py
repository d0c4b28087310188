"""The references for bench/write_throughput.py: a minimal consent write and bare reads, FastAPI + asyncpg.

POST /write takes the body of POST /v1/consents (`subject.email`, `decisions: [{purpose, channel, status}]`,
`source`; the bearer header is sent and ignored) and validates it with small pydantic models. The subject's key
is one HMAC-SHA256 of the email (a blind index, as consentd keeps; no normalisation, no subjects table). Then, on a
connection from an asyncpg pool sized like consentd's, in one transaction, for each decision (the bench sends one):

    BEGIN
    INSERT INTO bench_events (...) VALUES (...) RETURNING seq                          -- the event
    INSERT INTO bench_state (...) VALUES (...) ON CONFLICT (tenant_id, subject, purpose, channel)
        DO UPDATE SET ... WHERE bench_state.captured_at <= excluded.captured_at        -- the standing decision
    COMMIT

4 round trips (asyncpg prepares each statement once per connection and reuses it). The answer is a 201 with
the subject key and the events, serialised by orjson. The two tables are the bench's own (TABLES below, created by
write_throughput.py in the bench database): bench_events has a bigserial primary key and the (tenant, subject,
captured_at, seq) index consent_events has for a subject's history; bench_state has its primary key only.

GET /read/consents/{subject_id} and GET /read/history/{subject_id} read consentd's own rows of a subject, each
with one asyncpg query: the columns of consent_state that GET /v1/subjects/{id}/consents reads (services/ledger.py,
ordered as it sorts them), and the first page (100, plus the one that tells whether there is a next page) of
consent_events, in (captured_at, seq) order, of the columns GET /v1/subjects/{id}/history reads. JSON by orjson.

No authentication, no middleware, no metrics, no access log: that is the point.

    CONSENTD_DATABASE_URL=postgresql+asyncpg://root@127.0.0.1:5432/consentd_bench_write \\
        uvicorn bench.bare_write_app:create_app --factory --no-access-log
"""

import hashlib
import hmac
import uuid
from datetime import UTC, datetime
from typing import Literal

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from app.config import Settings
from app.db import asyncpg_dsn
from bench.bare_pool import pool_lifespan

TENANT = "bench"
# Created by write_throughput.py; here so that the app and its tables are read together.
TABLES = """
CREATE TABLE IF NOT EXISTS bench_events (
    seq bigserial PRIMARY KEY,
    event_id uuid NOT NULL,
    tenant_id varchar(64) NOT NULL,
    subject varchar(64) NOT NULL,
    purpose varchar(64) NOT NULL,
    channel varchar(16) NOT NULL,
    status varchar(16) NOT NULL,
    captured_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL,
    source varchar(64) NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_bench_events_subject ON bench_events (tenant_id, subject, captured_at, seq);
CREATE TABLE IF NOT EXISTS bench_state (
    tenant_id varchar(64) NOT NULL,
    subject varchar(64) NOT NULL,
    purpose varchar(64) NOT NULL,
    channel varchar(16) NOT NULL,
    status varchar(16) NOT NULL,
    captured_at timestamptz NOT NULL,
    event_seq bigint NOT NULL,
    event_id uuid NOT NULL,
    PRIMARY KEY (tenant_id, subject, purpose, channel)
);
"""
INSERT_EVENT = """
INSERT INTO bench_events (event_id, tenant_id, subject, purpose, channel, status, captured_at, recorded_at, source)
VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) RETURNING seq
"""
UPSERT_STATE = """
INSERT INTO bench_state (tenant_id, subject, purpose, channel, status, captured_at, event_seq, event_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (tenant_id, subject, purpose, channel) DO UPDATE
SET status = excluded.status, captured_at = excluded.captured_at, event_seq = excluded.event_seq,
    event_id = excluded.event_id
WHERE bench_state.captured_at <= excluded.captured_at
"""
READ_CONSENTS = """
SELECT purpose, channel, status, captured_at, event_id, policy_version, purpose_version
FROM consent_state WHERE tenant_id = $1 AND subject_id = $2 ORDER BY purpose, channel
"""
# services/ledger.EVENT_COLUMNS: every column of consent_events but tenant_id and evidence.
READ_HISTORY = """
SELECT seq, event_id, subject_id, purpose, purpose_version, channel, status, captured_at, recorded_at, source,
       method, policy_version, collection_point, actor, chain_index, prev_event_id, prev_hash, hash
FROM consent_events WHERE tenant_id = $1 AND subject_id = $2 ORDER BY captured_at, seq LIMIT 101
"""
HISTORY_PAGE = 100


class Subject(BaseModel):
    email: str


class Decision(BaseModel):
    purpose: str
    channel: str | None = None
    status: Literal["granted", "withdrawn"]


class Body(BaseModel):
    subject: Subject
    decisions: list[Decision] = Field(min_length=1, max_length=100)
    source: str = "api"


def _json(payload: object, status_code: int = 200) -> Response:
    # default=str: asyncpg's own UUID type, which orjson does not know.
    return Response(orjson.dumps(payload, default=str), status_code=status_code, media_type="application/json")


def create_app() -> FastAPI:
    settings = Settings()  # CONSENTD_* as for consentd: the same database, identifier key and pool size
    index_key = hashlib.sha256(settings.identifier_key.encode()).digest()

    app = FastAPI(title="bare write reference", lifespan=pool_lifespan(asyncpg_dsn(settings.database_url), settings))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/write")
    async def write(request: Request, body: Body) -> Response:
        subject = hmac.new(index_key, f"{TENANT}\x00email\x00{body.subject.email}".encode(), hashlib.sha256).hexdigest()
        now = datetime.now(UTC)
        events = []
        async with request.app.state.pool.acquire() as connection, connection.transaction():
            for decision in body.decisions:
                event_id, channel = uuid.uuid4(), decision.channel or ""
                seq = await connection.fetchval(
                    INSERT_EVENT, event_id, TENANT, subject, decision.purpose, channel, decision.status, now,
                    body.source,
                )
                await connection.execute(
                    UPSERT_STATE, TENANT, subject, decision.purpose, channel, decision.status, now, seq, event_id
                )
                events.append({
                    "event_id": event_id, "purpose": decision.purpose, "channel": decision.channel,
                    "status": decision.status, "captured_at": now, "recorded_at": now, "source": body.source,
                })
        return _json({"subject": subject, "events": events}, status_code=201)

    @app.get("/read/consents/{subject_id}")
    async def read_consents(request: Request, subject_id: uuid.UUID) -> Response:
        rows = await request.app.state.pool.fetch(READ_CONSENTS, TENANT, subject_id)
        return _json({"subject_id": subject_id, "consents": [dict(row) for row in rows]})

    @app.get("/read/history/{subject_id}")
    async def read_history(request: Request, subject_id: uuid.UUID) -> Response:
        rows = await request.app.state.pool.fetch(READ_HISTORY, TENANT, subject_id)
        return _json({"events": [dict(row) for row in rows[:HISTORY_PAGE]], "more": len(rows) > HISTORY_PAGE})

    return app
