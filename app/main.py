"""The FastAPI application: lifespan builds the database and services; routers; handlers; middleware."""

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app import handlers, logs, metrics
from app.config import Settings, get_settings
from app.db import Database
from app.deps import Services, install
from app.middleware import Edge
from app.models.common import problem_responses
from app.routers import (
    audit,
    banner,
    changes,
    checks,
    consents,
    ops,
    person,
    public,
    purposes,
    receipts,
    requests,
    subjects,
    suppressions,
    webhooks,
)
from app.security import Signer, TokenVerifier
from app.services.access import AccessLog
from app.services.banner import KeyDirectory, Throttle, ViewCache
from app.services.checks import Checker, PostgresReader, SqlReader
from app.services.notifications import Sender
from app.services.purposes import RuleCache
from app.services.scheduled import jobs
from app.services.subjects import IdentifierKeys
from app.services.tenants import TenantDirectory

log = logging.getLogger("consentd")
DOCS_ASSETS = "/docs/assets"
# The youngest generation is collected after this many allocations (the default is 700): see lifespan.
GC_THRESHOLD = 100_000


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = await Database.open(settings)
        verifier = TokenVerifier(settings)
        try:
            await verifier.load_jwks()
        except Exception as exc:
            log.warning("could not load the JWKS: %s", type(exc).__name__)
        keys = IdentifierKeys(settings.identifier_key, settings.default_region)
        rule_cache = RuleCache()
        reader = PostgresReader(database.pool, rule_cache) if database.pool is not None else SqlReader(database)
        built = Services(
            database=database,
            verifier=verifier,
            signer=Signer(settings),
            identifier_keys=keys,
            checker=Checker(reader, keys),
            access_log=AccessLog(database),
            rule_cache=rule_cache,
            tenants=TenantDirectory(database),
            banner_keys=KeyDirectory(database, ttl=settings.banner_key_cache_seconds),
            banner_views=ViewCache(ttl=settings.banner_key_cache_seconds),
            throttle=Throttle(
                per_ip=settings.public_rate_per_ip, per_key=settings.public_rate_per_key,
                secret=settings.identifier_key.encode(), redis_url=settings.redis_url,
            ),
            sender=Sender(
                keys=keys, allow_hosts=settings.webhook_allow_hosts, concurrency=settings.webhook_concurrency,
                timeout=settings.webhook_timeout,
            ),
        )
        install(app, built)
        runner = jobs.Runner(database, built.sender, region=settings.holidays_region) if settings.jobs else None
        # What startup built lives as long as the process: keep it out of the collector's full passes, which
        # otherwise walk the whole heap every few thousand allocations and stall a request for 50-150 ms.
        gc.collect()
        gc.freeze()
        # The frozen heap no longer counts as long-lived, so with the default thresholds (700, 10, 10) every few
        # thousand objects that outlive a young pass (a streamed chunk's rows and answers: 100k+) set off a full
        # pass over all the others in flight: 48% of a 1M-line stream's CPU (py-spy). Collecting the youngest
        # generation every GC_THRESHOLD allocations instead of 700 makes every generation's passes that much rarer.
        gc.set_threshold(GC_THRESHOLD, 10, 10)
        if runner is not None:
            runner.start()
        try:
            yield
        finally:
            if runner is not None:
                await runner.stop()
            await built.throttle.close()
            await database.close()
            metrics.process_exit()

    # FastAPIOffline: /docs and /redoc load their scripts and styles from consentd itself (the package ships them),
    # not from a CDN, so they work with no internet. validatorUrl None: Swagger UI would send the document's
    # address to validator.swagger.io.
    app = FastAPIOffline(
        title="consentd",
        version="0.1.0",
        summary="Consent and preferences: a tamper-evident ledger with real-time checks.",
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
        swagger_ui_parameters={"validatorUrl": None},
    )
    # Apart from the Services record: the settings are there before the lifespan runs (deps.app_settings).
    app.state.settings = settings
    # The check router first: routes are matched in order, and checks are the hot path.
    for router in (
        checks.router, consents.router, subjects.router, purposes.router, changes.router, suppressions.router,
        banner.router, receipts.router, audit.router, requests.router, requests.holds_router, webhooks.router,
    ):
        app.include_router(router, responses=problem_responses(400, 401, 403, 404, 413, 422, 503))
    app.include_router(public.router, responses=problem_responses(400, 401, 403, 413, 422, 429, 503))
    app.include_router(public.demo_router)
    app.include_router(person.router)
    app.include_router(ops.router)
    app.include_router(receipts.well_known)
    handlers.install(app)
    logs.install()
    app.add_middleware(
        Edge,
        default=settings.max_body_bytes,
        per_path={
            "/v1/checks/batch": settings.max_batch_body_bytes,
            "/v1/suppressions": settings.max_batch_body_bytes,
            "/v1/suppressions/remove": settings.max_batch_body_bytes,
            "/v1/checks/stream": settings.stream_max_body_bytes,
            "/v1/consents/import": settings.import_max_body_bytes,
            "/v1/public/cookie-consents": settings.public_max_body_bytes,
        },
    )
    return app
