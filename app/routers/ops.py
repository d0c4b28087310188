from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.deps import DatabaseDep
from app.services import health

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


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(_request: Request) -> PlainTextResponse:
    """Prometheus metrics."""
    return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)
