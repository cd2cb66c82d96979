"""Admin API: background jobs (the outbox), including dead letters."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query

from routers.deps import AdminDep, ClockDep, JobsDep, SessionDep
from routers.edge import api_router
from routers.problems import problem_responses
from service.jobs import admin as job_admin
from service.jobs.admin import JobPage, JobPublic
from service.models import JobState

router = api_router(prefix="/v1/admin/jobs", tags=["admin: jobs"], responses=problem_responses(401, 403))


@router.get("", operation_id="list_jobs", responses=problem_responses(422))
async def list_jobs(
    session: SessionDep,
    _admin: AdminDep,
    state: JobState | None = None,
    limit: Annotated[int, Query(ge=1, le=job_admin.MAX_PAGE)] = 100,
    cursor: str | None = None,
) -> JobPage:
    """Jobs newest first; `?state=dead` lists the comments that failed every attempt."""
    return await job_admin.list_jobs(session, state=state, limit=limit, cursor=cursor)


@router.post("/{job_id}/retry", operation_id="retry_job", responses=problem_responses(404, 409, 422))
async def retry_job(job_id: uuid.UUID, session: SessionDep, jobs: JobsDep, admin: AdminDep, now: ClockDep) -> JobPublic:
    """Give a dead job a fresh set of attempts."""
    job, to_enqueue = await job_admin.retry(session, job_id=job_id, actor=admin.actor, now=now)
    jobs.enqueue(to_enqueue)
    return job
