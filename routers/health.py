"""Liveness and readiness probes."""

from __future__ import annotations

from pydantic import BaseModel

from routers.deps import ServicesDep
from routers.edge import api_router
from routers.problems import problem_responses
from service import health

router = api_router(tags=["health"])


class StatusPublic(BaseModel):
    """Probe result."""

    status: str
    checks: dict[str, str] = {}


@router.get("/healthz", operation_id="healthz")
async def healthz() -> StatusPublic:
    """The process is up."""
    return StatusPublic(status="ok")


@router.get("/readyz", operation_id="readyz", responses=problem_responses(503))
async def readyz(services: ServicesDep) -> StatusPublic:
    """The database (and Redis, when configured) answer, and the in-process classifier has warmed up."""
    checks = await health.check(services.engine, services.backend, services.classifiers)
    return StatusPublic(status="ok", checks=checks)
