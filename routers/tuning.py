"""Admin API: stored rule simulations and classifier feedback from responders."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query

from routers.deps import AdminDep, ClockDep, SessionDep, SettingsDep
from routers.edge import api_router
from routers.problems import problem_responses
from service.routing import feedback, simulation
from service.routing.feedback import FeedbackPublic
from service.routing.simulation import SimulationPublic

router = api_router(prefix="/v1/admin", tags=["admin: tuning"], responses=problem_responses(401, 403, 422))


@router.get("/simulations/{simulation_id}", operation_id="get_simulation", responses=problem_responses(404))
async def get_simulation(simulation_id: uuid.UUID, session: SessionDep, _admin: AdminDep) -> SimulationPublic:
    """A simulation: pending, running, done (with its result) or failed."""
    return await simulation.read(session, simulation_id=simulation_id)


@router.get("/classifier/feedback", operation_id="classifier_feedback")
async def classifier_feedback(
    session: SessionDep,
    settings: SettingsDep,
    _admin: AdminDep,
    now: ClockDep,
    days: Annotated[int, Query(ge=1, le=365)] = 90,
) -> FeedbackPublic:
    """Per flag and topic, week by week: how often responders agreed with, corrected or overrode the classifier."""
    return await feedback.feedback(session, settings=settings, now=now, days=days)
