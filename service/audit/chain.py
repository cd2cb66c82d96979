"""The audit trail: one append-only row per change, written in the transaction that makes the change.

Rows are chained by hash: each row stores the previous row's hash and SHA-256(previous hash + the canonical JSON
of its own content), so editing, deleting or inserting a row anywhere breaks verification from that row on.
Appends are serialised (SQLite serialises writers; PostgreSQL takes a transaction-scoped advisory lock), so the
chain order is the id order is the commit order.

The chain's lock is always the last lock a transaction takes: `record` only flushes the audited change (taking
its row locks) and keeps the event in the session; the events are chained and inserted in one step just before
commit, after a final flush. A transaction holding the chain's lock therefore never waits for a row lock (it only
inserts audit rows and commits), so no lock cycle can pass through it — whatever order requests and jobs lock
their rows in. (Taking the chain's lock first instead would serialise every writing transaction on PostgreSQL.)
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col

from service.audit.tables import AuditEvent

SYSTEM_ACTOR = "system"
GENESIS: Final = "0" * 64  # the prev_hash of the first record
_LOCK_KEY: Final = 0x5B_A0D1  # pg_advisory_xact_lock key of the audit chain
_PENDING: Final = "audit_pending"  # session.info key: events recorded in this transaction, not yet written


def canonical(
    *, at: datetime, actor: str, action: str, target_type: str, target_id: str, before: Any, after: Any
) -> bytes:
    """The bytes a record's hash covers (stable: sorted keys, no whitespace, UTC timestamps in microseconds)."""
    content = {
        "at": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": actor,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "before": before,
        "after": after,
    }
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def chain_hash(prev_hash: str, record: bytes) -> str:
    """SHA-256 of the previous hash followed by the record."""
    return hashlib.sha256(prev_hash.encode() + record).hexdigest()


def _hash_of(row: AuditEvent, prev_hash: str) -> str:
    return chain_hash(
        prev_hash,
        canonical(
            at=row.at, actor=row.actor, action=row.action, target_type=row.target_type,
            target_id=row.target_id, before=row.before, after=row.after,
        ),
    )  # fmt: skip


async def record(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target_type: str,
    target_id: str,
    now: datetime,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Audit a change made at `now` in the caller's transaction (never comment bodies or secrets in before/after).

    The change is flushed now; the event is written just before the transaction commits (see the module doc).
    """
    # Round-trip through JSON now, so that the hash covers exactly what the database will give back.
    before = json.loads(json.dumps(before, default=str)) if before is not None else None
    after = json.loads(json.dumps(after, default=str)) if after is not None else None
    # Microseconds: what both databases keep.
    pending = AuditEvent(
        at=now, actor=actor, action=action, target_type=target_type, target_id=target_id, before=before,
        after=after,
    )  # fmt: skip
    await session.flush()
    session.info.setdefault(_PENDING, []).append(pending)


async def record_update(
    session: AsyncSession,
    row: object,
    changes: Mapping[str, Any],
    *,
    view: Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]],
    actor: str,
    action: str,
    target_type: str,
    target_id: str,
    now: datetime,
    then: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Apply `changes` (attribute -> value) to `row`, then `then` (changes to other rows), and audit it all with
    `view()` of the target before and after."""
    before = await _resolved(view())
    for name, value in changes.items():
        setattr(row, name, value)
    if then is not None:
        await then()
    await session.flush()
    await record(
        session, actor=actor, action=action, target_type=target_type, target_id=target_id, now=now, before=before,
        after=await _resolved(view()),
    )  # fmt: skip


async def _resolved(view: dict[str, Any] | Awaitable[dict[str, Any]]) -> dict[str, Any]:
    return await view if inspect.isawaitable(view) else view


def pending(session: Session) -> list[AuditEvent]:
    """The events recorded in this transaction that are not written yet (derived data reads them at commit)."""
    return list(session.info.get(_PENDING, ()))


@event.listens_for(Session, "before_commit")
def _append_pending(session: Session) -> None:
    """Chain and insert the transaction's audit events: the chain's lock is taken after every other lock."""
    pending: list[AuditEvent] = session.info.pop(_PENDING, [])
    if not pending:
        return
    session.flush()  # the last row changes, and their row locks, before the chain's lock
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_KEY)))
    last = session.execute(
        sa.select(col(AuditEvent.hash)).order_by(col(AuditEvent.id).desc()).limit(1)
    ).scalar_one_or_none()
    prev_hash = last or GENESIS
    for one in pending:
        one.prev_hash = prev_hash
        one.hash = prev_hash = _hash_of(one, prev_hash)
        session.add(one)
        session.flush()  # one insert at a time: ids follow the chain


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    """A rolled-back change leaves no audit event."""
    session.info.pop(_PENDING, None)


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome of walking the chain: `broken_at` is the id of the first record that does not verify."""

    records: int
    broken_at: int | None
    reason: str | None

    @property
    def ok(self) -> bool:
        """True when every record verified."""
        return self.broken_at is None


async def _rows(session: AsyncSession, batch: int = 5000) -> AsyncIterator[AuditEvent]:
    last_id = 0
    while True:
        rows = (
            (
                await session.execute(
                    sa.select(AuditEvent).where(col(AuditEvent.id) > last_id).order_by(col(AuditEvent.id)).limit(batch)
                )
            )
            .scalars()
            .all()
        )
        if not rows:
            return
        for row in rows:
            yield row
        assert rows[-1].id is not None
        last_id = rows[-1].id
        session.expunge_all()


async def verify(session: AsyncSession) -> Verification:
    """Walk the whole chain in id order and recompute every hash."""
    expected_prev = GENESIS
    count = 0
    async for row in _rows(session):
        count += 1
        if row.prev_hash != expected_prev:
            return Verification(count, row.id, "its prev_hash is not the previous record's hash (a record was "
                                "removed or inserted before it)")  # fmt: skip
        if row.hash != _hash_of(row, expected_prev):
            return Verification(count, row.id, "its content does not match its hash (the record was edited)")
        expected_prev = row.hash
    return Verification(count, None, None)
