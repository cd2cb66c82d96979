"""Admin use cases over the audit trail: search it (newest first, cursor by id) and verify its hash chain."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import audit
from service.errors import BadRequest
from service.models import AuditEvent

MAX_PAGE = 500


class AuditFilter(BaseModel):
    """Query of GET /v1/admin/audit."""

    model_config = ConfigDict(extra="forbid")

    actor: str | None = Field(None, description="Exactly this actor, e.g. `key:3:ops` or `system`.")
    action: str | None = Field(None, description="Actions starting with this, e.g. `queue_item.` or `api_key.revoked`.")
    target_type: str | None = Field(None, description="e.g. `queue_item`, `member`, `api_key`.")
    target_id: str | None = None
    since: datetime | None = Field(None, description="At or after this time (UTC if no offset).")
    until: datetime | None = Field(None, description="Before this time (UTC if no offset).")
    limit: int = Field(100, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(None, description="`next_cursor` of the previous page.")


class AuditEventPublic(BaseModel):
    """One audit record."""

    id: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    hash: str | None = Field(description="SHA-256 over the previous record's hash and this record's content.")


class AuditPage(BaseModel):
    """One page of audit records, newest first."""

    items: list[AuditEventPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page; None on the last page.")


class VerificationPublic(BaseModel):
    """The outcome of walking the whole hash chain."""

    records: int = Field(description="Records checked (up to and including the first bad one).")
    ok: bool
    broken_at: int | None = Field(description="Id of the first record that does not verify.")
    reason: str | None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _decode_cursor(cursor: str) -> int:
    if not cursor.isdigit():
        raise BadRequest("The cursor is not one this API returned.")
    return int(cursor)


async def search(session: AsyncSession, *, query: AuditFilter) -> AuditPage:
    """Audit records matching every given filter, newest (highest id) first."""
    stmt = sa.select(AuditEvent).order_by(col(AuditEvent.id).desc()).limit(query.limit + 1)
    if query.actor is not None:
        stmt = stmt.where(col(AuditEvent.actor) == query.actor)
    if query.action:
        stmt = stmt.where(col(AuditEvent.action).startswith(query.action, autoescape=True))
    if query.target_type is not None:
        stmt = stmt.where(col(AuditEvent.target_type) == query.target_type)
    if query.target_id is not None:
        stmt = stmt.where(col(AuditEvent.target_id) == query.target_id)
    if query.since is not None:
        stmt = stmt.where(col(AuditEvent.at) >= _utc(query.since))
    if query.until is not None:
        stmt = stmt.where(col(AuditEvent.at) < _utc(query.until))
    if query.cursor is not None:
        stmt = stmt.where(col(AuditEvent.id) < _decode_cursor(query.cursor))
    rows = list((await session.execute(stmt)).scalars())
    page, more = rows[: query.limit], len(rows) > query.limit
    items = [AuditEventPublic.model_validate(e, from_attributes=True) for e in page]
    return AuditPage(items=items, next_cursor=str(page[-1].id) if more else None)


async def verify(session: AsyncSession) -> VerificationPublic:
    """Recompute the whole chain (see service.audit.verify)."""
    result = await audit.verify(session)
    return VerificationPublic(records=result.records, ok=result.ok, broken_at=result.broken_at, reason=result.reason)
