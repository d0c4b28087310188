from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from app import metrics as prometheus
from app.deps import DatabaseDep, metrics_access
from app.models.common import problem_responses
from app.services.kit import health

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "The database is unreachable"}})
async def readyz(database: DatabaseDep) -> dict[str, str]:
    """The database answers."""
    await health.ping(database)
    return {"status": "ready"}


@router.get(
    "/metrics", response_class=PlainTextResponse, dependencies=[Depends(metrics_access)],
    responses=problem_responses(401),  # only when CONSENTD_METRICS_TOKEN is set
)
async def metrics() -> PlainTextResponse:
    """Prometheus metrics, added up over every worker process. With CONSENTD_METRICS_TOKEN set, only for requests
    bearing it."""
    return PlainTextResponse(prometheus.exposition(), media_type=CONTENT_TYPE_LATEST)
