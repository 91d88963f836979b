"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import get_state
from service.errors import problem_response
from service.state import ServiceState

router = APIRouter(tags=["health"])
DRAINING = "the server is shutting down: it answers the requests it has, send new ones to another instance"


# HEAD as well, for load balancers that probe without a body; out of the schema, where it would repeat GET's
# operation (and FastAPI warn of a duplicate operation id on stderr, outside the JSON log).
@router.get("/healthz")
@router.head("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    """The process is alive and answering."""
    return {"status": "alive"}


@router.get("/readyz", responses={503: {"content": {"application/problem+json": {}}}})
@router.head("/readyz", include_in_schema=False)
async def readyz(state: Annotated[ServiceState, Depends(get_state)]) -> JSONResponse:
    """The model is loaded, verified and warmed, on the provider the settings require, and the server is not
    shutting down (a load balancer stops sending new requests while those accepted are answered)."""
    if state.drain.begun:
        return problem_response(503, "shutting-down", DRAINING, {"Retry-After": "5"})
    if not state.ready or state.model is None:
        return problem_response(503, "not-ready", state.reason, {"Retry-After": "5"})
    m = state.model.manifest
    return JSONResponse(
        {
            "status": "ready",
            "model": {"name": m.name, "version": m.version, "sha256": m.sha256},
            "provider": state.model.provider,
            "reason": state.reason,
        }
    )


@router.get("/metrics", response_class=Response)
async def metrics(state: Annotated[ServiceState, Depends(get_state)]) -> Response:
    """Prometheus text exposition."""
    if state.batcher is not None:
        state.metrics.queue_depth.set(state.batcher.depth)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
