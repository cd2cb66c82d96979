"""Background processing of comments: claim job rows, analyse, store the result, retry or dead-letter.

Jobs are ids only and idempotent. A job row is claimed with a conditional UPDATE (exactly one runner at a
time; a runner that vanished loses its lease after `job_lease_seconds`); the result is stored only while the
claim still holds (fenced by the attempt number), and keyed by comment id, so a job run twice has one effect.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from classifiers.pipeline import Analyser, Analysis
from service import logs, metrics
from service.classification.classifier import document, thresholds_for
from service.database import SessionFactory, dialect_name, transaction
from service.errors import summarise
from service.models import Comment, CommentAnalysis, Delivery, Job, JobState, Source
from service.routing.dispatch import dispatch_comments
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Claim:
    """A job row this runner holds: `attempt` fences the result against a later runner of the same row."""

    job_id: uuid.UUID
    comment_id: uuid.UUID
    attempt: int
    request_id: str | None = None  # of the request that wrote the job row: this comment's log lines carry it


@dataclass(slots=True)
class BatchReport:
    """What one call of process_jobs did (for logs and tests)."""

    claimed: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0


async def claim(session: AsyncSession, job_ids: Sequence[uuid.UUID], *, now: datetime, lease: timedelta) -> list[Claim]:
    """Take the given jobs that are due (pending and available, or running with an expired lease)."""
    if not job_ids:
        return []
    stmt = (
        sa.update(Job)
        .where(
            col(Job.id).in_(job_ids),
            sa.or_(
                sa.and_(col(Job.state) == JobState.pending, col(Job.available_at) <= now),
                sa.and_(col(Job.state) == JobState.running, col(Job.started_at) < now - lease),
            ),
        )
        .values(state=JobState.running, attempts=col(Job.attempts) + 1, started_at=now)
        .returning(col(Job.id), col(Job.comment_id), col(Job.attempts), col(Job.request_id))
    )
    rows = (await session.execute(stmt)).all()
    return [Claim(job_id=r[0], comment_id=r[1], attempt=r[2], request_id=r[3]) for r in rows]


async def process_jobs(
    factory: SessionFactory,
    analyser: Analyser,
    job_ids: Sequence[uuid.UUID],
    *,
    settings: Settings,
    clock: Callable[[], datetime],
) -> BatchReport:
    """Run a batch of process_comment jobs; a failing comment is retried alone so it never sinks the batch.

    `clock` is the caller's (a batch spans the model's run: claimed, finished and failed each read it once).
    """
    report = BatchReport()
    async with transaction(factory) as session:
        claims = await claim(session, job_ids, now=clock(), lease=timedelta(seconds=settings.job_lease_seconds))
    report.claimed = len(claims)
    report.skipped = len(job_ids) - len(claims)
    if not claims:
        return report
    try:
        with logs.request_context(_common_request_id(claims)):  # the whole batch came from one request
            await _run(factory, analyser, claims, report, settings, clock)
    except Exception as exc:
        if len(claims) == 1:
            log.exception(
                "job %s failed (attempt %d)", claims[0].job_id, claims[0].attempt,
                extra={"request_id": claims[0].request_id, "comment_id": claims[0].comment_id},
            )  # fmt: skip
            await _record_failure(factory, claims[0], summarise(exc), settings=settings, now=clock())
            report.failed += 1
            return report
        log.warning("a batch of %d failed; running its comments one by one", len(claims), exc_info=True)
        for one in claims:
            try:
                with logs.request_context(one.request_id):
                    await _run(factory, analyser, [one], report, settings, clock)
            except Exception as exc_one:
                log.exception(
                    "job %s failed (attempt %d)", one.job_id, one.attempt,
                    extra={"request_id": one.request_id, "comment_id": one.comment_id},
                )  # fmt: skip
                await _record_failure(factory, one, summarise(exc_one), settings=settings, now=clock())
                report.failed += 1
    return report


def _common_request_id(claims: Sequence[Claim]) -> str | None:
    ids = {c.request_id for c in claims}
    return ids.pop() if len(ids) == 1 else None


@dataclass(frozen=True, slots=True)
class _Result:
    """One comment's analysis, for the version that was analysed, with its source's thresholds."""

    version: int
    analysis: Analysis
    thresholds: dict[str, float]


async def _run(
    factory: SessionFactory,
    analyser: Analyser,
    claims: Sequence[Claim],
    report: BatchReport,
    settings: Settings,
    clock: Callable[[], datetime],
) -> None:
    begun = time.perf_counter()
    async with factory() as session:
        rows = (
            await session.execute(
                sa.select(Comment, col(Source.thresholds))
                .join(Source, col(Source.id) == col(Comment.source_id))
                .where(col(Comment.id).in_([c.comment_id for c in claims]))
            )
        ).all()
    comments = {comment.id: (comment, thresholds) for comment, thresholds in rows}
    live = [c for c in claims if c.comment_id in comments and comments[c.comment_id][0].deleted_at is None]
    started = time.perf_counter()
    analyses = await analyser.analyse([comments[c.comment_id][0].body for c in live]) if live else []
    per_comment_ms = (time.perf_counter() - started) * 1000 / max(len(live), 1)
    for _ in live:
        metrics.CLASSIFICATION_SECONDS.observe(per_comment_ms / 1000)
    results = {
        c.comment_id: _Result(
            version=comments[c.comment_id][0].version,
            analysis=analysis,
            thresholds=thresholds_for(settings, comments[c.comment_id][1]),
        )
        for c, analysis in zip(live, analyses, strict=True)
    }
    now = clock()
    async with transaction(factory) as session:
        stored: list[uuid.UUID] = []
        finished: list[Claim] = []
        for one in claims:
            result = results.get(one.comment_id)
            if await _finish(session, one, result, duration_ms=per_comment_ms, now=now):
                report.done += 1
                finished.append(one)
                if result is not None:
                    stored.append(one.comment_id)
        # The queue item commits with the classification it was routed by.
        await dispatch_comments(session, stored, now=now)
    seconds = time.perf_counter() - begun
    for one in finished:
        metrics.PROCESSING_SECONDS.observe(seconds)
        metrics.JOBS_FINISHED.labels(outcome="done").inc()
        log.info(
            "comment %s processed (job %s, attempt %d)", one.comment_id, one.job_id, one.attempt,
            extra={"request_id": one.request_id, "comment_id": one.comment_id, "job_id": one.job_id,
                   "attempt": one.attempt, "duration_ms": round(seconds * 1000, 1)},
        )  # fmt: skip


async def _finish(
    session: AsyncSession, one: Claim, result: _Result | None, *, duration_ms: float, now: datetime
) -> int:
    """Store the result and mark the job done, if this runner still holds the claim. 1 if it did."""
    still_ours = (
        await session.execute(
            sa.update(Job)
            .where(col(Job.id) == one.job_id, col(Job.state) == JobState.running, col(Job.attempts) == one.attempt)
            .values(state=JobState.done, finished_at=now, last_error=None)
            .returning(col(Job.id))
        )
    ).first()
    if still_ours is None:
        log.info("job %s was taken over or cancelled; dropping attempt %d's result", one.job_id, one.attempt)
        return 0
    if result is None:  # the comment was deleted meanwhile: nothing to store, nothing to do
        return 1
    await upsert_analysis(session, one.comment_id, result, duration_ms=duration_ms, now=now)
    return 1


async def upsert_analysis(
    session: AsyncSession, comment_id: uuid.UUID, result: _Result, *, duration_ms: float, now: datetime
) -> None:
    """One analysis row per comment; an older version never overwrites a newer one."""
    existing = await session.get(CommentAnalysis, comment_id, with_for_update=dialect_name(session) == "postgresql")
    if existing is not None and existing.comment_version > result.version:
        return
    analysis = result.analysis
    row = existing or CommentAnalysis(
        comment_id=comment_id, comment_version=result.version, model_version="", embedding=b""
    )
    row.comment_version = result.version
    row.model_version = analysis.model_version
    row.embedding = np.asarray(analysis.embedding, dtype="<f4").tobytes()
    row.pii = [{"kind": p.kind, "start": p.start, "end": p.end} for p in analysis.pii]
    row.classification = document(analysis, result.thresholds)
    row.duration_ms = duration_ms
    row.processed_at = now
    session.add(row)
    await session.flush()


async def _record_failure(
    factory: SessionFactory, one: Claim, error: str, *, settings: Settings, now: datetime
) -> None:
    async with transaction(factory) as session:
        job = await session.get(Job, one.job_id, with_for_update=dialect_name(session) == "postgresql")
        if job is None or job.state != JobState.running or job.attempts != one.attempt:
            return
        job.last_error = error  # the class and a redacted line; the traceback is in the log
        if job.attempts >= job.max_attempts:
            job.state = JobState.dead
            job.finished_at = now
            log.error("job %s is dead after %d attempts", job.id, job.attempts, extra={"request_id": one.request_id})
            metrics.JOBS_FINISHED.labels(outcome="dead").inc()
        else:
            metrics.JOBS_FINISHED.labels(outcome="retry").inc()
            job.state = JobState.pending
            job.available_at = now + timedelta(seconds=settings.job_backoff_seconds * 2 ** (job.attempts - 1))
            job.enqueued_at = None
        await session.flush()


async def due_jobs(
    factory: SessionFactory, *, settings: Settings, now: datetime, limit: int = 1000, queue_was_lost: bool = False
) -> list[uuid.UUID]:
    """Job rows that should be (re-)enqueued now; marks them enqueued so the next sweep leaves them alone.

    Pending rows that are available and were never enqueued (or were enqueued long ago and never started, e.g.
    Redis lost them), and running rows whose runner has gone silent past the lease. `queue_was_lost`: the
    in-process queue just started empty, so every pending row is due however recently it was enqueued.
    """
    requeue_before = now if queue_was_lost else now - timedelta(seconds=settings.job_requeue_seconds)
    lease_before = now - timedelta(seconds=settings.job_lease_seconds)
    async with transaction(factory) as session:
        stmt = (
            sa.select(col(Job.id))
            .where(
                sa.or_(
                    sa.and_(
                        col(Job.state) == JobState.pending,
                        col(Job.available_at) <= now,
                        sa.or_(col(Job.enqueued_at).is_(None), col(Job.enqueued_at) < requeue_before),
                    ),
                    sa.and_(
                        col(Job.state) == JobState.running,
                        col(Job.started_at) < lease_before,
                        sa.or_(col(Job.enqueued_at).is_(None), col(Job.enqueued_at) < requeue_before),
                    ),
                )
            )
            .order_by(col(Job.available_at))
            .limit(limit)
        )
        if dialect_name(session) == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        ids = list((await session.execute(stmt)).scalars())
        if ids:
            await mark_enqueued(session, ids, now=now)
    return ids


async def mark_enqueued(session: AsyncSession, job_ids: Sequence[uuid.UUID], *, now: datetime) -> None:
    """Remember when jobs were handed to the queue backend."""
    await session.execute(sa.update(Job).where(col(Job.id).in_(job_ids)).values(enqueued_at=now))


async def prune_deliveries(factory: SessionFactory, *, settings: Settings, now: datetime) -> int:
    """Forget webhook ids older than the retention period; returns how many."""
    cutoff = now - timedelta(days=settings.delivery_retention_days)
    async with transaction(factory) as session:
        result = await session.execute(sa.delete(Delivery).where(col(Delivery.received_at) < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
