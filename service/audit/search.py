"""Admin use cases over the audit trail: search it (newest first, cursor by id) and verify its hash chain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.audit import chain as audit
from service.audit.tables import AuditEvent
from service.inputs import UtcDatetime
from service.pagination import ColumnInt, decode_cursor, encode_cursor

MAX_PAGE = 500
_CURSOR: TypeAdapter[tuple[int]] = TypeAdapter(tuple[ColumnInt])  # the last record's id


class AuditFilter(BaseModel):
    """Query of GET /v1/admin/audit."""

    model_config = ConfigDict(extra="forbid")

    actor: str | None = Field(None, description="Exactly this actor, e.g. `key:3:ops` or `system`.")
    action: str | None = Field(None, description="Actions starting with this, e.g. `queue_item.` or `api_key.revoked`.")
    target_type: str | None = Field(None, description="e.g. `queue_item`, `member`, `api_key`.")
    target_id: str | None = None
    since: UtcDatetime | None = Field(None, description="At or after this time (UTC if no offset).")
    until: UtcDatetime | None = Field(None, description="Before this time (UTC if no offset).")
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
        stmt = stmt.where(col(AuditEvent.at) >= query.since)
    if query.until is not None:
        stmt = stmt.where(col(AuditEvent.at) < query.until)
    if query.cursor is not None:
        (before,) = decode_cursor(_CURSOR, query.cursor)
        stmt = stmt.where(col(AuditEvent.id) < before)
    rows = list((await session.execute(stmt)).scalars())
    page, more = rows[: query.limit], len(rows) > query.limit
    items = [AuditEventPublic.model_validate(e, from_attributes=True) for e in page]
    next_cursor = None
    if more:
        assert page[-1].id is not None  # a stored record has its id
        next_cursor = encode_cursor(_CURSOR, (page[-1].id,))
    return AuditPage(items=items, next_cursor=next_cursor)


async def verify(session: AsyncSession) -> VerificationPublic:
    """Recompute the whole chain (see service.audit.verify)."""
    result = await audit.verify(session)
    return VerificationPublic(records=result.records, ok=result.ok, broken_at=result.broken_at, reason=result.reason)
