"""Admin API: the organisation's topic taxonomy."""

from __future__ import annotations

from fastapi import Response

from routers.deps import AdminDep, ClockDep, JobsDep, SessionDep, SettingsDep
from routers.edge import api_router
from routers.params import RowId
from routers.problems import problem_responses
from service.classification import topics
from service.classification.topics import TopicIn, TopicPublic, TopicUpdate

router = api_router(prefix="/v1/admin/topics", tags=["admin: topics"], responses=problem_responses(401, 403))


@router.post("", status_code=201, operation_id="create_topic", responses=problem_responses(409, 422))
async def create_topic(
    data: TopicIn, session: SessionDep, jobs: JobsDep, settings: SettingsDep, admin: AdminDep, now: ClockDep
) -> TopicPublic:
    """Add a topic with a description and example comments; recent comments are classified again."""
    topic, job_ids = await topics.create(session, data=data, actor=admin.actor, settings=settings, now=now)
    jobs.enqueue(job_ids)
    return topic


@router.get("", operation_id="list_topics")
async def list_topics(session: SessionDep, _admin: AdminDep) -> list[TopicPublic]:
    """The taxonomy."""
    return await topics.list_all(session)


@router.get("/{topic_id}", operation_id="get_topic", responses=problem_responses(404, 422))
async def get_topic(topic_id: RowId, session: SessionDep, _admin: AdminDep) -> TopicPublic:
    """One topic."""
    return await topics.read(session, topic_id=topic_id)


@router.patch("/{topic_id}", operation_id="update_topic", responses=problem_responses(404, 409, 422))
async def update_topic(
    topic_id: RowId,
    data: TopicUpdate,
    session: SessionDep,
    jobs: JobsDep,
    settings: SettingsDep,
    admin: AdminDep,
    now: ClockDep,
) -> TopicPublic:
    """Rename a topic, change its description or replace its examples; recent comments are classified again."""
    topic, job_ids = await topics.update(
        session, topic_id=topic_id, data=data, actor=admin.actor, settings=settings, now=now
    )
    jobs.enqueue(job_ids)
    return topic


@router.delete("/{topic_id}", status_code=204, operation_id="delete_topic", responses=problem_responses(404, 422))
async def delete_topic(
    topic_id: RowId, session: SessionDep, jobs: JobsDep, settings: SettingsDep, admin: AdminDep, now: ClockDep
) -> Response:
    """Remove a topic from the taxonomy; recent comments are classified again."""
    jobs.enqueue(await topics.delete(session, topic_id=topic_id, actor=admin.actor, settings=settings, now=now))
    return Response(status_code=204)
