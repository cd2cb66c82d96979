"""Admin API: outbound deliveries (platform callbacks and notifications), including the dead ones."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query

from routers.deps import AdminDep, ClockDep, SessionDep, SettingsDep
from routers.edge import api_router
from routers.params import RowId
from routers.problems import problem_responses
from service.outbound import admin as outbound_admin
from service.outbound.admin import DeliveryFilter, DeliveryPage, DeliveryPublic
from service.outbound.tables import DeliveryState, MessageKind

router = api_router(prefix="/v1/admin/deliveries", tags=["admin: deliveries"], responses=problem_responses(401, 403))


@router.get("", operation_id="list_deliveries", responses=problem_responses(422))
async def list_deliveries(
    session: SessionDep,
    settings: SettingsDep,
    _admin: AdminDep,
    state: DeliveryState | None = None,
    kind: MessageKind | None = None,
    target: Annotated[str | None, Query(max_length=100, description="e.g. source:intranet or channel:hr-mail")] = None,
    comment: Annotated[uuid.UUID | None, Query(description="Only the deliveries about this comment.")] = None,
    limit: Annotated[int, Query(ge=1, le=outbound_admin.MAX_PAGE)] = 100,
    cursor: str | None = None,
) -> DeliveryPage:
    """Deliveries newest first; `?state=dead` lists what could not be delivered."""
    filters = DeliveryFilter(state=state, kind=kind, target=target, comment=comment)
    return await outbound_admin.list_deliveries(
        session, filters=filters, limit=limit, cursor=cursor, max_attempts=settings.outbound_max_attempts
    )


@router.post("/{delivery_id}/retry", operation_id="retry_delivery", responses=problem_responses(404, 409, 422))
async def retry_delivery(
    delivery_id: RowId, session: SessionDep, settings: SettingsDep, admin: AdminDep, now: ClockDep
) -> DeliveryPublic:
    """Give a dead or failing delivery a fresh set of attempts, due now (the same idempotency key is sent)."""
    return await outbound_admin.retry(
        session, delivery_id=delivery_id, actor=admin.actor, now=now, max_attempts=settings.outbound_max_attempts
    )
