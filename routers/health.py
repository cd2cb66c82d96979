"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import Request
from pydantic import BaseModel

from routers.edge import api_router
from routers.problems import problem_responses
from service import health

router = api_router(tags=["health"])


class Status(BaseModel):
    """Probe result."""

    status: str
    checks: dict[str, str] = {}


@router.get("/healthz", operation_id="healthz")
async def healthz() -> Status:
    """The process is up."""
    return Status(status="ok")


@router.get("/readyz", operation_id="readyz", responses=problem_responses(503))
async def readyz(request: Request) -> Status:
    """The database (and Redis, when configured) answer, and the in-process classifier has warmed up."""
    state = request.app.state
    checks = await health.check(state.engine, state.backend, state.classifiers)
    return Status(status="ok", checks=checks)
