"""The baseline for bench/check_throughput.py: a bare FastAPI endpoint doing one asyncpg primary-key lookup.

It takes the same request as POST /v1/checks (the same JSON body, the same bearer header, which it ignores),
validates the body with a small pydantic model, computes the identifier's blind index (one HMAC-SHA256, the
same key consentd uses, so that the lookup hits the seeded rows) and reads the subject with a primary-key
lookup on subject_identifiers (tenant_id, id_hash) through an asyncpg pool sized like consentd's. It answers
a small JSON object serialised by orjson.

No authentication, no identifier normalisation, no joins, no middleware, no metrics: that is the point.

    BENCH_DATABASE_URL=postgresql://root@127.0.0.1:5432/consentd_bench \\
        uvicorn bench.bare_app:create_app --factory --no-access-log
"""

import hashlib
import hmac
import os

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel

from app.config import Settings
from app.db import asyncpg_dsn
from app.services.subjects.identifiers import IdentifierKeys
from bench.bare_pool import pool_lifespan

TENANT = "bench"
LOOKUP = "SELECT subject_id FROM subject_identifiers WHERE tenant_id = $1 AND id_hash = $2"


class Subject(BaseModel):
    email: str


class Body(BaseModel):
    subject: Subject
    purpose: str
    channel: str | None = None


def create_app() -> FastAPI:
    settings = Settings()  # CONSENTD_* as for consentd: the same identifier key and pool size
    dsn = os.environ.get("BENCH_DATABASE_URL") or asyncpg_dsn(settings.database_url)
    index_key = IdentifierKeys(settings.identifier_key, settings.default_region)._index_key

    app = FastAPI(title="bare baseline", lifespan=pool_lifespan(dsn, settings))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/lookup")
    async def lookup(request: Request, body: Body) -> Response:
        message = f"{TENANT}\x00email\x00{body.subject.email}".encode()
        id_hash = hmac.new(index_key, message, hashlib.sha256).hexdigest()
        row = await request.app.state.pool.fetchrow(LOOKUP, TENANT, id_hash)
        payload = {"subject_id": row["subject_id"] if row else None, "purpose": body.purpose, "channel": body.channel}
        return Response(orjson.dumps(payload, default=str), media_type="application/json")

    return app
