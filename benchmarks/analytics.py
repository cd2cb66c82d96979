"""Analytics at scale: summary, breakdown by channel and export over a 90-day window, on SQLite and PostgreSQL.

    .venv/bin/python -m benchmarks.analytics [--comments 1000000 --days 365 --repeat 5 --skip-postgres]

For each database (an SQLite file in a temporary folder; a throwaway PostgreSQL database, dropped afterwards), both
migrated, `--comments` comments spread evenly over the last `--days` days are bulk-written (PostgreSQL: COPY;
SQLite: executemany in one transaction per chunk), as processing, routing and the queue leave them: 2,000 threads
in 20 channels; an analysis per comment (needs-answer, sentiment, emotion and topic labels; personal data in 5%);
an item for 95% (owners, SLAs, states: most answered or resolved, a fifth waiting, a few held), a first response
for 60%; the audit trail's `queue_item.created` event per item plus approvals, rejections and escalations. Then
ANALYZE, and the analytics facts are rebuilt (`switchboard rebuild-analytics`; timed), and
each use case runs `--repeat` times (after one warm-up) on a session of its own, as a request would:
the median and the worst are printed, with the export's rows, bytes and time to its first chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from benchmarks.databases import temporary_postgres, temporary_sqlite
from service import migrate
from service.analytics import export as exports
from service.analytics import figures, upkeep
from service.analytics.scope import Scope
from service.database import create_engine, create_session_factory, table
from service.models import Comment, QueueItem

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
THREADS, CHANNELS = 2000, 20
TOPICS = ["pay", "it", "canteen", "parking", "leave", "travel", "security", "events", "benefits", "other"]
EMOTIONS = ["joy", "anger", "sadness", "fear", "surprise", None]
SENTIMENTS = ["negative", "neutral", "neutral", "positive"]
MEMBERS = [f"m{i}" for i in range(50)]
TEAMS = [f"t{i}" for i in range(10)]

Record = dict[str, Any]


def log(message: str) -> None:
    """Progress, on stderr (stdout carries only the results)."""
    print(f"# {message}", file=sys.stderr, flush=True)


def doc(rng: random.Random) -> tuple[dict[str, Any], str, str]:
    sentiment, topic = rng.choice(SENTIMENTS), rng.choice(TOPICS)
    needs = "needs_answer" if rng.random() < 0.6 else "no_answer"
    emotion = rng.choice(EMOTIONS)
    classification: dict[str, Any] = {
        "sentiment": {"label": sentiment, "scores": {sentiment: 0.8}},
        "needs_answer": {"label": needs, "scores": {needs: 0.7}},
        "emotion": None if emotion is None else {"label": emotion, "scores": {emotion: 0.6}},
        "topic": {"label": topic, "score": 0.6, "scores": {topic: 0.6}, "nearest": []},
        "offensive": {"label": "not-offensive", "scores": {"offensive": 0.02, "not-offensive": 0.98}},
        "language": {"code": "en", "confidence": 0.99, "supported": True},
        "pii": [],
        "model_version": "bench",
    }
    return classification, sentiment, topic


def generate(count: int, days: int, now: datetime, chunk: int, seed: int = 7) -> Iterator[dict[str, list[Record]]]:
    """The rows of `count` comments, `chunk` comments at a time: comment, comment_analysis, queue_item, audit_event."""
    rng = random.Random(seed)
    span = days * 86400
    for start in range(0, count, chunk):
        out: dict[str, list[Record]] = {"comment": [], "comment_analysis": [], "queue_item": [], "audit_event": []}
        for n in range(start, min(count, start + chunk)):
            received = now - timedelta(seconds=span * (count - n) / count)
            comment_id, thread = uuid.uuid4(), 1 + n % THREADS
            deleted = received + timedelta(hours=2) if rng.random() < 0.01 else None
            out["comment"].append({
                "id": comment_id, "source_id": 1, "thread_id": thread, "external_id": f"c-{n}",
                "author_external_id": f"u-{n % 5000}", "body": f"Comment {n}: when does the canteen open?",
                "version": 1, "received_at": received, "updated_at": received, "deleted_at": deleted,
            })  # fmt: skip
            classification, sentiment, topic = doc(rng)
            pii = [{"kind": "email", "start": 0, "end": 5}] if rng.random() < 0.05 else []
            out["comment_analysis"].append({
                "comment_id": comment_id, "comment_version": 1, "model_version": "bench", "embedding": b"",
                "pii": pii, "classification": classification, "duration_ms": 1.0, "processed_at": received,
            })  # fmt: skip
            if rng.random() >= 0.95:
                continue
            item_id = uuid.uuid4()
            r = rng.random()
            state, resolution = (
                ("answered", "answered") if r < 0.45 else ("resolved", "answered_on_platform") if r < 0.55
                else ("resolved", "no_reply_needed") if r < 0.72 else ("held", None) if r < 0.75
                else ("escalated", None) if r < 0.78 else ("open", None)
            )  # fmt: skip
            if deleted is not None and state not in ("answered", "resolved"):
                state, resolution = "resolved", "comment_deleted"
            sla = rng.choice([None, 4 * 3600, 24 * 3600])
            due = received + timedelta(seconds=sla) if sla else None
            answered = resolution in ("answered", "answered_on_platform")
            first = received + timedelta(seconds=rng.expovariate(1 / 7200)) if answered else None
            owner = rng.random()
            member = rng.choice(MEMBERS) if owner < 0.5 else None
            team = rng.choice(TEAMS) if owner < 0.8 else None
            out["queue_item"].append({
                "id": item_id, "comment_id": comment_id, "source_id": 1, "thread_id": thread, "state": state,
                "priority": "normal", "priority_rank": 2, "member_id": member, "team_id": team,
                "channel": f"channel-{thread % CHANNELS}", "topic": topic, "sentiment": sentiment,
                "manually_assigned": False, "rule_id": "bench", "ruleset_version": 1, "reason": "", "tags": [],
                "no_reply": resolution == "no_reply_needed" and rng.random() < 0.5, "sla_seconds": sla,
                "due_at": due, "sort_due": due or datetime(9999, 1, 1, tzinfo=UTC), "resolution": resolution,
                "resolved_at": first, "first_response_at": first, "answered_by": member if first else None,
                "escalated_at": due if state == "escalated" else None, "reopen_count": 0, "created_at": received,
                "updated_at": received,
            })  # fmt: skip
            held = state == "held" or rng.random() < 0.03
            events: list[tuple[str, datetime, dict[str, Any] | None, dict[str, Any]]] = [
                ("created", received, None, {"state": "held" if held else "open"})
            ]
            if held and state != "held":
                approved = rng.random() < 0.7
                events.append(("approved" if approved else "resolved", received + timedelta(minutes=30),
                               {"state": "held"}, {"state": "open" if approved else "resolved",
                                                   "resolution": None if approved else "spam"}))  # fmt: skip
            if state == "escalated" and due is not None:
                events.append(("escalated", due, {"state": "open"}, {"state": "escalated"}))
            for action, at, before, after in events:
                out["audit_event"].append({
                    "at": at, "actor": "bench", "action": f"queue_item.{action}", "target_type": "queue_item",
                    "target_id": str(item_id), "before": before, "after": after,
                })  # fmt: skip
        yield out


JSON_COLUMNS = {"pii", "classification", "tags", "before", "after"}


async def seed_postgres(url: str, count: int, days: int, now: datetime, chunk: int) -> None:
    import asyncpg  # type: ignore[import-untyped]

    u = make_url(url)
    connection = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                                       database=u.database)  # fmt: skip
    try:
        await connection.execute(
            "INSERT INTO source (id, slug, name, kind, active, secret, created_at, updated_at) "
            "VALUES (1, 'intranet', 'Intranet', 'standard', true, 'x', now(), now())"
        )
        await connection.executemany(
            "INSERT INTO thread (id, source_id, external_id, title, channel, created_at, updated_at) "
            "VALUES ($1, 1, $2, $3, $4, now(), now())",
            [(i, f"story-{i}", f"Story {i}", f"channel-{i % CHANNELS}") for i in range(1, THREADS + 1)],
        )
        for rows in generate(count, days, now, chunk):
            for name, records in rows.items():
                if not records:
                    continue
                columns = list(records[0])
                values = [
                    tuple(json.dumps(r[c]) if c in JSON_COLUMNS and r[c] is not None else r[c] for c in columns)
                    for r in records
                ]
                await connection.copy_records_to_table(name, records=values, columns=columns)
        await connection.execute("ANALYZE")
    finally:
        await connection.close()


def _sqlite_value(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in JSON_COLUMNS:
        return json.dumps(value)
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, bool):
        return int(value)
    return value


def seed_sqlite(path: str, count: int, days: int, now: datetime, chunk: int) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute(
            "INSERT INTO source (id, slug, name, kind, active, secret, created_at, updated_at) "
            "VALUES (1, 'intranet', 'Intranet', 'standard', 1, 'x', '2020-01-01 00:00:00.000000', "
            "'2020-01-01 00:00:00.000000')"
        )
        db.executemany(
            "INSERT INTO thread (id, source_id, external_id, title, channel, created_at, updated_at) "
            "VALUES (?, 1, ?, ?, ?, '2020-01-01 00:00:00.000000', '2020-01-01 00:00:00.000000')",
            [(i, f"story-{i}", f"Story {i}", f"channel-{i % CHANNELS}") for i in range(1, THREADS + 1)],
        )
        db.commit()
        for rows in generate(count, days, now, chunk):
            for name, records in rows.items():
                if not records:
                    continue
                columns = list(records[0])
                sql = f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"  # noqa: S608 - our own table and column names
                db.executemany(sql, [tuple(_sqlite_value(c, r[c]) for c in columns) for r in records])
            db.commit()
        db.execute("ANALYZE")
        db.commit()
    finally:
        db.close()


def postgres(admin_url_text: str) -> AbstractAsyncContextManager[str]:
    """A fresh, migrated PostgreSQL database for one measurement, dropped afterwards."""
    return temporary_postgres(admin_url_text, "switchboard_analytics_bench")


def sqlite_database() -> AbstractAsyncContextManager[str]:
    """A fresh, migrated SQLite file."""
    return temporary_sqlite("switchboard-analytics-bench")


async def timed(repeat: int, run: Callable[[], Awaitable[Any]]) -> tuple[list[float], Any]:
    result = await run()  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = await run()
        times.append(time.perf_counter() - started)
    return times, result


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


async def measure(database: str, url: str, args: argparse.Namespace, now: datetime) -> None:
    log(f"{database}: seeding {args.comments:,} comments")
    started = time.perf_counter()
    if database == "postgresql":
        await seed_postgres(url, args.comments, args.days, now, args.chunk)
    else:
        await asyncio.to_thread(seed_sqlite, make_url(url).database or "", args.comments, args.days, now, args.chunk)
    seeded = time.perf_counter() - started
    print(f"{database}: seeded {args.comments:,} comments (+ analyses, items, audit events) in {seeded:,.1f} s")
    engine = create_engine(url)
    factory = create_session_factory(engine)
    since, until = now - timedelta(days=90), now
    try:
        started = time.perf_counter()
        facts = await migrate.rebuild_analytics(engine)  # what `switchboard rebuild-analytics` does
        print(f"{database}: rebuild-analytics: {facts:,} fact rows in {time.perf_counter() - started:,.1f} s")
        async with factory() as session:
            sample = list((await session.execute(sa.select(table(Comment).c.id).limit(100))).scalars())

        async def upkeep_100() -> None:  # what a commit that changed 100 comments adds
            async with factory() as session:
                await session.run_sync(upkeep.refresh, sample)
                await session.commit()

        times, _ = await timed(args.repeat, upkeep_100)
        print(f"{database}: upkeep at commit of 100 changed comments: median {ms(statistics.median(times))}")
        team = Scope(table(QueueItem).c.team_id == TEAMS[0], everything=False)

        async def responder() -> Any:
            async with factory() as session:
                return await figures.summary(session, scope=team, since=since, until=until, now=now)

        times, result = await timed(args.repeat, responder)
        print(f"{database}: summary (90 days) of one team's items: median {ms(statistics.median(times))}, "
              f"worst {ms(max(times))} (received {result.received:,})")  # fmt: skip

        async def summary() -> Any:
            async with factory() as session:
                return await figures.summary(session, scope=Scope.all(), since=since, until=until, now=now)

        async def breakdown() -> Any:
            async with factory() as session:
                return await figures.breakdown(session, by="channel", scope=Scope.all(), since=since, until=until,
                                               now=now)  # fmt: skip

        for name, run in (("summary (90 days)", summary), ("breakdown by channel (90 days)", breakdown)):
            times, result = await timed(args.repeat, run)
            extra = f"received {result.received:,}" if name.startswith("summary") else f"{len(result.groups)} groups"
            print(f"{database}: {name}: median {ms(statistics.median(times))}, worst {ms(max(times))} ({extra})")

        async def export() -> tuple[int, int, float]:
            found = await exports.export(factory, scope=Scope.all(), format="csv", since=since, until=until,
                                         include_bodies=False, now=now)  # fmt: skip
            started, first, size, lines = time.perf_counter(), 0.0, 0, 0
            async for chunk in found.chunks:
                if not first:
                    first = time.perf_counter() - started
                size += len(chunk)
                lines += chunk.count(b"\n")
            return lines - 1, size, first

        times, (rows, size, first) = await timed(1, export)
        print(f"{database}: export csv (90 days): {ms(times[0])} for {rows:,} rows, {size / 1e6:,.1f} MB, "
              f"first chunk after {ms(first)}")  # fmt: skip
    finally:
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comments", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=20_000)
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--postgres-url", default=os.environ.get("SWITCHBOARD_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    args = parser.parse_args()
    now = datetime.now(UTC).replace(microsecond=0)
    if not args.skip_postgres:
        async with postgres(args.postgres_url) as url:
            await measure("postgresql", url, args, now)
    if not args.skip_sqlite:
        async with sqlite_database() as url:
            await measure("sqlite", url, args, now)


if __name__ == "__main__":
    asyncio.run(main())
