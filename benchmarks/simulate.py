"""How long a rule simulation takes: a 200-rule draft over 100,000 stored comments, SQLite and PostgreSQL.

    .venv/bin/python -m benchmarks.simulate [--comments 100000] [--rules 200] [--skip-postgres]

Seeds a fresh database (members, teams, processed comments with stored classifications and their waiting queue
items; no model pass), then
runs the simulation the way the background job does (`service.routing.simulation.run`) and prints a table: seeding time,
simulation time, comments per second, how many would move, peak memory of this process.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.routing import MEMBERS, TEAMS, TEXT, actions, condition, document, token
from service import migrate
from service.database import create_engine, create_session_factory, table, transaction
from service.models import Comment, CommentAnalysis, Member, QueueItem, Source, Team, TeamMember
from service.models.base import utcnow
from service.models.queue import NO_DUE
from service.routing import RulesetIn, simulation
from service.routing.tables import Simulation
from service.settings import Settings

POSTGRES_ADMIN = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def draft(size: int) -> RulesetIn:
    """`size` rules like benchmarks.routing's, the last the default."""
    rules: list[dict[str, Any]] = [
        {"id": f"r{i}", "name": f"Rule {i}", "when": condition(i), "then": actions(i)} for i in range(size - 1)
    ]
    rules.append({"id": "default", "name": "Default", "then": {"assign": {"to": "team", "team": "team-0"}}})
    return RulesetIn.model_validate({"rules": rules})


async def seed(url: str, comments: int, rules: int) -> float:
    """Directory and `comments` processed comments (targets spread over every rule and the default)."""
    started = time.perf_counter()
    factory = create_session_factory(engine := create_engine(url))
    rng = random.Random(0)
    now = utcnow()
    async with transaction(factory) as session:
        session.add(Source(slug="intranet", name="Intranet", kind="standard", secret="whsec_bench"))  # noqa: S106 (a throwaway database)
        for i in range(MEMBERS):
            session.add(Member(id=f"m{i}", name=f"Member {i}"))
        for t in range(TEAMS):
            session.add(Team(id=f"team-{t}", name=f"Team {t}"))
        await session.flush()
        for t in range(TEAMS):
            for k in range(6):
                session.add(TeamMember(team_id=f"team-{t}", member_id=f"m{(t * 5 + k) % MEMBERS}", position=k))
        source_id = (await session.execute(sa.select(table(Source).c.id))).scalar_one()
    for start in range(0, comments, 5000):
        rows, analyses, items = [], [], []
        for i in range(start, min(comments, start + 5000)):
            target = rng.randrange(rules) if rng.random() < 0.7 else None
            comment_id = uuid.uuid4()
            rows.append({
                "id": comment_id, "source_id": source_id, "external_id": f"c{i}", "version": 1,
                "body": TEXT.format(token=token(target) if target is not None else "kw-none"),
                "author_external_id": f"u{i % 500}", "author_department": "Finance",
                "received_at": now - timedelta(seconds=comments - i), "updated_at": now,
            })  # fmt: skip
            topic = f"topic-{target}" if target is not None else "topic-none"
            analyses.append({
                "comment_id": comment_id, "comment_version": 1, "model_version": "bench", "embedding": b"",
                "pii": [], "classification": document(topic), "duration_ms": 0.0, "processed_at": now,
            })  # fmt: skip
            # Waiting in team 0's pool, as the live default rule left them: the draft re-routes them.
            items.append({
                "id": uuid.uuid4(), "comment_id": comment_id, "source_id": source_id, "state": "open",
                "priority": "normal", "priority_rank": 2, "member_id": None, "team_id": "team-0", "rule_id": "default",
                "ruleset_version": 0, "reason": "seeded", "tags": [], "no_reply": False, "manually_assigned": False,
                "reopen_count": 0, "sort_due": NO_DUE, "created_at": now, "updated_at": now,
            })  # fmt: skip
        async with transaction(factory) as session:
            await session.execute(sa.insert(table(Comment)), rows)
            await session.execute(sa.insert(table(CommentAnalysis)), analyses)
            await session.execute(sa.insert(table(QueueItem)), items)
    await engine.dispose()
    return time.perf_counter() - started


async def measure(url: str, comments: int, rules: int) -> dict[str, Any]:
    """Seed, then time one simulation run end to end."""
    engine = create_engine(url)
    await migrate.upgrade(engine)
    await engine.dispose()
    seeding = await seed(url, comments, rules)
    settings = Settings(database_url=url, simulation_sync_max_comments=0, simulation_max_comments=comments)
    factory = create_session_factory(engine := create_engine(url))
    async with transaction(factory) as session:
        row, background = await simulation.create(
            session, data=simulation.SimulateIn(rules=draft(rules)), actor="bench", settings=settings, now=utcnow()
        )
    assert background
    started = time.perf_counter()
    await simulation.run(factory, row.id, settings=settings, clock=utcnow)
    elapsed = time.perf_counter() - started
    async with factory() as session:
        done = await session.get(Simulation, row.id)
        assert done is not None
        assert done.result is not None, done.error
        moved, replayed = done.result["moved"], done.result["comments"]
    await engine.dispose()
    return {"seconds": elapsed, "seed": seeding, "moved": moved, "comments": replayed}


async def postgres_url() -> tuple[str, str]:
    """A fresh database on the local server: (url, name)."""
    name = f"switchboard_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_ADMIN)
    async with admin.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    return POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}", name


async def drop(name: str) -> None:
    admin = create_engine(POSTGRES_ADMIN)
    async with admin.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comments", type=int, default=100_000)
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}"
        results.append(("SQLite", await measure(url, args.comments, args.rules)))
    if not args.skip_postgres:
        url, name = await postgres_url()
        try:
            results.append(("PostgreSQL", await measure(url, args.comments, args.rules)))
        finally:
            await drop(name)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nSimulation of a {args.rules}-rule draft against the live rules ({args.comments:,} stored comments)\n")
    print("| database | comments replayed | seed s | simulation s | comments/s | would move |")
    print("|---|---|---|---|---|---|")
    for name, r in results:
        print(f"| {name} | {r['comments']:,} | {r['seed']:.1f} | {r['seconds']:.1f} | "
              f"{r['comments'] / r['seconds']:,.0f} | {r['moved']:,} |")  # fmt: skip
    print(f"\npeak RSS of this process: {peak:,.0f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
