"""Responder API: the routing queue."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, Response

from routers.deps import ClockDep, CurrentPrincipal, SessionDep, SettingsDep
from routers.edge import api_router
from routers.problems import problem_responses
from service.queue import actions as queue
from service.queue import reading
from service.queue.actions import AnswerIn, ReassignIn, ResolveIn, SnoozeIn
from service.queue.reading import QueueFilter
from service.queue.viewer import Scope
from service.queue.views import QueueItemDetail, QueueItemPublic, QueuePage

router = api_router(prefix="/v1/queue", tags=["queue"], responses=problem_responses(401, 403, 422))
ItemActionErrors = problem_responses(404, 409)


@router.get("", operation_id="list_queue")
async def list_queue(
    query: Annotated[QueueFilter, Query()], session: SessionDep, principal: CurrentPrincipal, now: ClockDep
) -> QueuePage:
    """My queue and my teams' queues, most urgent first; cursor pagination.

    Without `state`: open, claimed and escalated items, and the items held for moderation for one of my teams (or
    assigned to me) — held items come first, then by priority, then by due time. Snoozed items only with
    `include_snoozed`."""
    return await reading.list_items(session, principal=principal, query=query, now=now)


@router.post(
    "/claim-next",
    operation_id="claim_next_item",
    response_model=QueueItemPublic,
    responses={204: {"description": "Nothing is waiting in your queues."}, **problem_responses(409)},
)
async def claim_next_item(
    session: SessionDep, settings: SettingsDep, principal: CurrentPrincipal, now: ClockDep, scope: Scope = "all"
) -> QueueItemPublic | Response:
    """Claim the most urgent item waiting in my queues; 204 when there is none."""
    item = await queue.claim_next(session, principal=principal, settings=settings, now=now, scope=scope)
    return item if item is not None else Response(status_code=204)


@router.get("/{item_id:uuid}", operation_id="get_queue_item", responses=problem_responses(404))
async def get_queue_item(
    item_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal, now: ClockDep
) -> QueueItemDetail:
    """One item with its comment, thread context, classification explanation, replies and history."""
    return await reading.read(session, principal=principal, item_id=item_id, now=now)


@router.post("/{item_id}/claim", operation_id="claim_item", responses=ItemActionErrors)
async def claim_item(
    item_id: uuid.UUID, session: SessionDep, settings: SettingsDep, principal: CurrentPrincipal, now: ClockDep
) -> QueueItemPublic:
    """Claim an item (a lease); when several responders race, one wins and the others get 409."""
    return await queue.claim(session, principal=principal, item_id=item_id, settings=settings, now=now)


@router.post("/{item_id}/release", operation_id="release_item", responses=ItemActionErrors)
async def release_item(
    item_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal, now: ClockDep
) -> QueueItemPublic:
    """Give a claimed item back to the queue."""
    return await queue.release(session, principal=principal, item_id=item_id, now=now)


@router.post("/{item_id}/answer", operation_id="answer_item", responses=ItemActionErrors)
async def answer_item(
    item_id: uuid.UUID, data: AnswerIn, session: SessionDep, principal: CurrentPrincipal, now: ClockDep
) -> QueueItemPublic:
    """Answer the comment: the reply is recorded (and posted to the platform) and the item becomes `answered`.

    `answered` is final like `resolved`: a later `/resolve` (or `/answer`) answers 409 `invalid_state`; `/reassign`
    reopens the item."""
    return await queue.answer(session, principal=principal, item_id=item_id, data=data, now=now)


@router.post("/{item_id}/resolve", operation_id="resolve_item", responses=ItemActionErrors)
async def resolve_item(
    item_id: uuid.UUID, data: ResolveIn, session: SessionDep, principal: CurrentPrincipal, now: ClockDep
) -> QueueItemPublic:
    """Close a waiting item with a reason; 409 `invalid_state` if it is already answered or resolved."""
    return await queue.resolve(session, principal=principal, item_id=item_id, data=data, now=now)


@router.post("/{item_id}/reassign", operation_id="reassign_item", responses=ItemActionErrors)
async def reassign_item(
    item_id: uuid.UUID, data: ReassignIn, session: SessionDep, principal: CurrentPrincipal, now: ClockDep
) -> QueueItemPublic:
    """Give the item to another member and/or team, with a note."""
    return await queue.reassign(session, principal=principal, item_id=item_id, data=data, now=now)


@router.post("/{item_id}/snooze", operation_id="snooze_item", responses=ItemActionErrors)
async def snooze_item(
    item_id: uuid.UUID, data: SnoozeIn, session: SessionDep, principal: CurrentPrincipal, now: ClockDep
) -> QueueItemPublic:
    """Hide the item until a time (the SLA keeps running)."""
    return await queue.snooze(session, principal=principal, item_id=item_id, data=data, now=now)


@router.post("/{item_id}/approve", operation_id="approve_item", responses=ItemActionErrors)
async def approve_item(
    item_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal, now: ClockDep
) -> QueueItemPublic:
    """Let an item held for moderation into the queue."""
    return await queue.approve(session, principal=principal, item_id=item_id, now=now)
