"""Comments as admins see them."""

from __future__ import annotations

import uuid

from routers.deps import AdminDep, ClockDep, CurrentPrincipal, JobsDep, SessionDep, SettingsDep
from routers.edge import api_router
from routers.problems import problem_responses
from service.ingest import comments
from service.ingest.comments import CommentPublic
from service.queue import labels
from service.queue.labels import LabelIn, LabelPublic

router = api_router(prefix="/v1/comments", tags=["comments"], responses=problem_responses(401, 403))


@router.get("/{comment_id}", operation_id="get_comment", responses=problem_responses(404, 422))
async def get_comment(comment_id: uuid.UUID, session: SessionDep, _admin: AdminDep) -> CommentPublic:
    """A comment with its thread, its processing state and what processing found."""
    return await comments.read(session, comment_id=comment_id)


@router.post(
    "/{comment_id}/labels", status_code=201, operation_id="correct_labels", responses=problem_responses(404, 422)
)
async def correct_labels(
    comment_id: uuid.UUID,
    data: LabelIn,
    session: SessionDep,
    jobs: JobsDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    now: ClockDep,
) -> LabelPublic:
    """Correct what the classifiers said about a comment: its queue item shows the correction and moves if the
    route changes (never one a person has claimed, snoozed, approved or reassigned); topic corrections also teach
    the topic model."""
    label, job_ids = await labels.correct(
        session, comment_id=comment_id, data=data, principal=principal, settings=settings, now=now
    )
    jobs.enqueue(job_ids)
    return label
