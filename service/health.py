"""Readiness: can we reach what we depend on?"""

from __future__ import annotations

import asyncio
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from service.database import ping
from service.errors import NotReady
from service.jobs.backends import JobBackend

CHECK_TIMEOUT_SECONDS = 3.0


class Probe(Protocol):
    """Something that raises unless it is ready."""

    async def ping(self) -> None: ...


async def check(engine: AsyncEngine, backend: JobBackend, classifier: Probe) -> dict[str, str]:
    """'ok' per dependency (and the classifier's warm-up), or NotReady naming the ones that failed."""
    results: dict[str, str] = {}
    for name, probe in (("classifier", classifier.ping()), ("database", ping(engine)), ("queue", backend.ping())):
        try:
            await asyncio.wait_for(probe, CHECK_TIMEOUT_SECONDS)
            results[name] = "ok"
        except Exception as exc:
            results[name] = f"failed: {type(exc).__name__}: {exc}"[:300]
    if any(v != "ok" for v in results.values()):
        raise NotReady("; ".join(f"{k} {v}" for k, v in results.items() if v != "ok"), checks=results)
    return results
