"""Request dependencies: the app's services, the unit of work (session + jobs to enqueue after commit), callers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from service.auth import ratelimit
from service.auth.keys import Principal, authenticate, require_role
from service.auth.ratelimit import RateLimiter
from service.classification.classifier import Classifier
from service.classification.loader import ClassifierProvider
from service.database import SessionFactory
from service.jobs.backends import JobBackend
from service.models import Role
from service.models.base import utcnow
from service.outbound.runner import InlineRunner
from service.settings import Settings


@dataclass(slots=True)
class Services:
    """What the lifespan builds once and requests use, typed (`app.state.services`)."""

    settings: Settings
    engine: AsyncEngine
    session_factory: SessionFactory
    backend: JobBackend
    classifiers: ClassifierProvider
    rate_limiter: RateLimiter
    clock: Callable[[], datetime] = field(default=utcnow)
    outbound: InlineRunner | None = None  # the in-process delivery loop (embedded deployment only)


def get_services(request: Request) -> Services:
    """The app's services (the lifespan must have run)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_now(request: Request) -> datetime:
    """The current time from the app's clock (tests move it instead of sleeping); one reading per request."""
    return get_services(request).clock()


ClockDep = Annotated[datetime, Depends(get_now)]


async def get_classifier(services: ServicesDep) -> Classifier:
    """The process's classifier (loaded now if this process has not yet: an API beside workers)."""
    return await services.classifiers.get()


ClassifierDep = Annotated[Classifier, Depends(get_classifier)]


def get_settings(request: Request) -> Settings:
    """The settings the app was created with (available before the lifespan too)."""
    settings: Settings = request.app.state.settings
    return settings


class AfterCommit:
    """Collects job ids during a request; they are enqueued only once the request's transaction commits."""

    def __init__(self) -> None:
        self.job_ids: list[uuid.UUID] = []
        self.simulations: list[uuid.UUID] = []

    def enqueue(self, job_ids: Sequence[uuid.UUID]) -> None:
        """Enqueue these jobs after commit (dropped on rollback; the rows do not exist then)."""
        self.job_ids.extend(job_ids)

    def run_simulation(self, simulation_id: uuid.UUID) -> None:
        """Start this stored simulation in the background after commit."""
        self.simulations.append(simulation_id)


def get_jobs(request: Request) -> AfterCommit:
    """The request's after-commit job list."""
    jobs: AfterCommit | None = getattr(request.state, "jobs", None)
    if jobs is None:
        jobs = request.state.jobs = AfterCommit()
    return jobs


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, committed once after the handler and before the response is sent."""
    services = get_services(request)
    async with services.session_factory() as session:
        yield session
        await session.commit()
    jobs: AfterCommit | None = getattr(request.state, "jobs", None)
    if jobs is not None:
        if jobs.job_ids:
            await services.backend.enqueue(jobs.job_ids)
        for simulation_id in jobs.simulations:
            await services.backend.run_simulation(simulation_id)


SettingsDep = Annotated[Settings, Depends(get_settings)]
# scope="function": the commit (and so the durability of what we acknowledge) happens before the response.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
JobsDep = Annotated[AfterCommit, Depends(get_jobs)]


_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer sbk_...`")


def get_rate_limiter(request: Request) -> RateLimiter:
    """The app's rate limiter (built in the lifespan)."""
    return get_services(request).rate_limiter


RateLimiterDep = Annotated[RateLimiter, Depends(get_rate_limiter)]


async def get_principal(
    session: SessionDep,
    settings: SettingsDep,
    limiter: RateLimiterDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    now: ClockDep,
) -> Principal:
    """The caller behind `Authorization: Bearer <key>`, counted against its key's rate limit."""
    principal = await authenticate(session, f"Bearer {credentials.credentials}" if credentials else None, now=now)
    await ratelimit.enforce(
        limiter, f"key:{principal.key_id}", settings.rate_limit_per_key_per_minute, who="An API key"
    )
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def get_admin(principal: CurrentPrincipal) -> Principal:
    """The caller, who must hold an admin key."""
    return require_role(principal, Role.admin)


AdminDep = Annotated[Principal, Depends(get_admin)]


def get_staff(principal: CurrentPrincipal) -> Principal:
    """The caller, who must hold an admin or a responder key."""
    return require_role(principal, Role.admin, Role.responder)


StaffDep = Annotated[Principal, Depends(get_staff)]


async def limit_webhook_source(slug: str, settings: SettingsDep, limiter: RateLimiterDep) -> None:
    """Count a delivery against its source slug's limit before any work on it (reading, verifying, parsing).

    Before verification on purpose: a flood of unsigned junk aimed at a slug costs a signature check and a
    database lookup each, so it is limited like signed traffic (a valid platform shares the slug's allowance).
    """
    await ratelimit.enforce(
        limiter, f"source:{slug}", settings.rate_limit_per_source_per_minute, who=f"The source '{slug}'"
    )
