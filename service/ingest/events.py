"""Webhook ingestion: verify, de-duplicate, apply the event and write its job row, all in one transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Literal, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import connectors, logs, metrics, sources
from service.connectors.base import CommentEvent, ThreadRef
from service.database import insert_ignore, table
from service.errors import Forbidden
from service.models import (
    OPEN_JOB_STATES,
    Comment,
    CommentAnalysis,
    CommentVersion,
    Delivery,
    Job,
    JobKind,
    JobState,
    Thread,
    changes,
)
from service.outbound import platform
from service.routing.dispatch import close_for_deleted_comment
from service.settings import Settings

Outcome = Literal[
    "created", "updated", "deleted", "unchanged", "duplicate_comment", "ignored_deleted", "ignored_stale", "ignored"
]


@dataclass(slots=True)
class Receipt:
    """What became of one delivery. `job_ids` are to be enqueued once the transaction has committed."""

    comment_id: uuid.UUID | None
    duplicate: bool
    outcome: Outcome
    job_ids: list[uuid.UUID] = field(default_factory=list)


async def receive(
    session: AsyncSession,
    *,
    settings: Settings,
    slug: str,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
) -> Receipt:
    """Accept one signed delivery from a source. Nothing is written unless the signature verifies."""
    source = await sources.get_by_slug(session, slug)
    adapter = connectors.connector_for(source.kind).adapter
    delivery_id = adapter.verify(
        body=body,
        headers=headers,
        secrets=sources.valid_secrets(source, now),
        tolerance_seconds=settings.webhook_tolerance_seconds,
        now=now,
    )
    if not source.active:
        raise Forbidden(f"The source '{slug}' is inactive; an admin can re-activate it.")
    event = adapter.parse(body)
    assert source.id is not None

    delivery_pk = await insert_ignore(
        session,
        table(Delivery),
        {
            "source_id": source.id,
            "webhook_id": delivery_id,
            "event_type": event.event_type,
            "outcome": "received",
            "received_at": now,
        },
        conflict_columns=["source_id", "webhook_id"],
        returning=table(Delivery).c.id,
    )
    if delivery_pk is None:
        seen = (
            await session.execute(
                sa.select(Delivery).where(col(Delivery.source_id) == source.id, col(Delivery.webhook_id) == delivery_id)
            )
        ).scalar_one()
        metrics.WEBHOOKS_ACCEPTED.labels(outcome="duplicate").inc()
        return Receipt(comment_id=seen.comment_id, duplicate=True, outcome=cast(Outcome, seen.outcome))

    receipt = await apply_event(
        session, source_id=source.id, event=event, now=now, max_attempts=settings.job_max_attempts
    )
    await session.execute(
        sa.update(Delivery)
        .where(col(Delivery.id) == delivery_pk)
        .values(comment_id=receipt.comment_id, outcome=receipt.outcome)
    )
    metrics.WEBHOOKS_ACCEPTED.labels(outcome=receipt.outcome).inc()
    return receipt


async def apply_event(
    session: AsyncSession, *, source_id: int, event: CommentEvent, now: datetime, max_attempts: int
) -> Receipt:
    """Apply one comment event to the stored comment (idempotent per external comment id)."""
    if event.action == "ignored":  # about no comment (a ping, a topic's opening post): keep what it says of a thread
        await _upsert_thread(session, source_id=source_id, thread=event.thread, now=now)
        return Receipt(comment_id=None, duplicate=False, outcome="ignored")
    if event.action == "deleted":
        return await _delete(session, source_id=source_id, external_id=event.external_id, now=now)
    thread_id = await _upsert_thread(session, source_id=source_id, thread=event.thread, now=now)
    create = partial(
        _create, session, source_id=source_id, thread_id=thread_id, event=event, now=now, max_attempts=max_attempts
    )
    if event.action == "created" and (receipt := await create()) is not None:
        return receipt  # the common case, in one statement
    comment = await _lock_comment(session, source_id=source_id, external_id=event.external_id)
    if comment is None:  # an edit of a comment we never heard of: it is created from the edit
        if (receipt := await create()) is not None:
            return receipt
        comment = await _lock_comment(session, source_id=source_id, external_id=event.external_id)
        assert comment is not None  # created concurrently, and committed: we waited for its lock
    if comment.deleted_at is not None:
        return Receipt(comment_id=comment.id, duplicate=False, outcome="ignored_deleted")
    if event.action == "created":
        return Receipt(comment_id=comment.id, duplicate=False, outcome="duplicate_comment")
    if event.edited_at and comment.edited_at and event.edited_at < comment.edited_at:
        return Receipt(comment_id=comment.id, duplicate=False, outcome="ignored_stale")
    # Metadata may change without the body changing (a moved story, a renamed department).
    comment.thread_id = thread_id
    comment.parent_external_id = event.parent_external_id
    _set_author(comment, event)
    comment.updated_at = now
    if event.body == comment.body:
        await session.flush()
        return Receipt(comment_id=comment.id, duplicate=False, outcome="unchanged")
    comment.version += 1
    comment.body = event.body or ""
    comment.edited_at = event.edited_at or now
    session.add(
        CommentVersion(
            comment_id=comment.id,
            version=comment.version,
            body=comment.body,
            edited_at=comment.edited_at,
            received_at=now,
        )
    )
    await _cancel_open_jobs(session, comment.id, states=(JobState.pending,), now=now, reason="superseded by an edit")
    job = _new_job(comment.id, comment.version, now=now, max_attempts=max_attempts)
    session.add(job)
    await session.flush()
    return Receipt(comment_id=comment.id, duplicate=False, outcome="updated", job_ids=[job.id])


def _set_author(comment: Comment, event: CommentEvent) -> None:
    author = event.author
    comment.author_external_id = author.external_id if author else None
    comment.author_name = author.name if author else None
    comment.author_department = author.department if author else None


def _new_job(comment_id: uuid.UUID, version: int, *, now: datetime, max_attempts: int) -> Job:
    return Job(
        kind=JobKind.process_comment,
        comment_id=comment_id,
        comment_version=version,
        max_attempts=max_attempts,
        created_at=now,
        available_at=now,
        enqueued_at=now,  # handed to the queue right after commit; the reconciler retries if that fails
        request_id=logs.current_request_id(),  # the job's log lines carry the id of the request that caused it
    )


async def _lock_comment(session: AsyncSession, *, source_id: int, external_id: str) -> Comment | None:
    stmt = (
        sa.select(Comment)
        .where(col(Comment.source_id) == source_id, col(Comment.external_id) == external_id)
        # NO KEY UPDATE: processing inserts the comment's analysis meanwhile, whose foreign key takes a KEY SHARE
        # lock on this row; FOR UPDATE would wait for it while processing waits for our job rows (a deadlock).
        .with_for_update(key_share=True)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def _upsert_thread(
    session: AsyncSession, *, source_id: int, thread: ThreadRef | None, now: datetime
) -> int | None:
    if thread is None:
        return None
    fields = {
        "title": thread.title,
        "url": thread.url,
        "kind": thread.kind,
        "channel": thread.channel,
        "author_external_id": thread.author.external_id if thread.author else None,
        "author_name": thread.author.name if thread.author else None,
        "author_email": thread.author.email if thread.author else None,
    }
    # An event that does not name the story's author does not know it (a forum reply does not repeat who opened the
    # topic): the author an earlier event gave is kept.
    unknown = ("author_external_id", "author_name", "author_email") if thread.author is None else ()
    thread_id: int = await insert_ignore(
        session,
        table(Thread),
        {"source_id": source_id, "external_id": thread.external_id, "created_at": now, "updated_at": now, **fields},
        conflict_columns=["source_id", "external_id"],
        update_columns=[*(f for f in fields if f not in unknown), "updated_at"],  # the latest event's view wins
        returning=table(Thread).c.id,
    )
    return thread_id


async def _create(
    session: AsyncSession,
    *,
    source_id: int,
    thread_id: int | None,
    event: CommentEvent,
    now: datetime,
    max_attempts: int,
) -> Receipt | None:
    """Insert the comment with version 1 and its job; None if it already exists (nothing written then)."""
    author = event.author
    body = event.body or ""
    comment_id = await insert_ignore(
        session,
        table(Comment),
        {
            "id": uuid.uuid4(),
            "source_id": source_id,
            "thread_id": thread_id,
            "external_id": event.external_id,
            "parent_external_id": event.parent_external_id,
            "author_external_id": author.external_id if author else None,
            "author_name": author.name if author else None,
            "author_department": author.department if author else None,
            "body": body,
            "version": 1,
            "posted_at": event.posted_at,
            "edited_at": event.edited_at,
            "received_at": now,
            "updated_at": now,
            "echo_of_reply_id": await platform.echo_of(
                session, source_id=source_id, external_id=event.external_id, marker=event.reply_marker
            )
            if event.reply_marker is not None
            else None,
        },
        conflict_columns=["source_id", "external_id"],
        returning=table(Comment).c.id,
    )
    if comment_id is None:
        return None
    changes.touch(session, comments=[comment_id])  # written outside the ORM
    session.add(CommentVersion(comment_id=comment_id, version=1, body=body, edited_at=event.edited_at, received_at=now))
    job = _new_job(comment_id, 1, now=now, max_attempts=max_attempts)
    session.add(job)
    await session.flush()
    return Receipt(comment_id=comment_id, duplicate=False, outcome="created", job_ids=[job.id])


async def _delete(session: AsyncSession, *, source_id: int, external_id: str, now: datetime) -> Receipt:
    """Erase a comment's text and personal fields, keep the fact that it existed and was deleted."""
    comment = await _lock_comment(session, source_id=source_id, external_id=external_id)
    if comment is None:
        # Deleted before we heard of it: keep a tombstone so a late 'created' does not bring it back.
        comment = Comment(
            source_id=source_id,
            external_id=external_id,
            body="",
            received_at=now,
            updated_at=now,
            deleted_at=now,
        )
        session.add(comment)
        await session.flush()
        return Receipt(comment_id=comment.id, duplicate=False, outcome="deleted")
    if comment.deleted_at is not None:
        return Receipt(comment_id=comment.id, duplicate=False, outcome="ignored_deleted")
    comment.body = ""
    comment.author_external_id = comment.author_name = comment.author_department = None
    comment.deleted_at = comment.updated_at = now
    await session.execute(sa.update(CommentVersion).where(col(CommentVersion.comment_id) == comment.id).values(body=""))
    # Jobs before the analysis: processing locks its job, then the analysis; the same order here (no lock cycle).
    await _cancel_open_jobs(session, comment.id, states=OPEN_JOB_STATES, now=now, reason="comment deleted")
    await session.execute(sa.delete(CommentAnalysis).where(col(CommentAnalysis.comment_id) == comment.id))
    await close_for_deleted_comment(session, comment.id, now=now)
    await session.flush()
    return Receipt(comment_id=comment.id, duplicate=False, outcome="deleted")


async def _cancel_open_jobs(
    session: AsyncSession, comment_id: uuid.UUID, *, states: tuple[JobState, ...], now: datetime, reason: str
) -> None:
    await session.execute(
        sa.update(Job)
        .where(col(Job.comment_id) == comment_id, col(Job.state).in_(states))
        .values(state=JobState.cancelled, finished_at=now, last_error=reason)
    )
