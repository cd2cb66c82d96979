"""Queue latency at scale: list, page, filter, claim-next and read, through the real app, on SQLite and PostgreSQL.

    .venv/bin/python -m benchmarks.queue [--items 100000 --requests 200 --skip-postgres]

For each database (an SQLite file in a temporary folder, migrated; a throwaway PostgreSQL database, migrated,
dropped afterwards) the app is built with `create_app(settings)` and its lifespan runs; requests go through
`httpx.ASGITransport`, so every latency includes routing, authentication, validation, the SQL and the JSON. The
directory (20 teams of 10 members) is created through the admin API, then `--items` queue items (each with its
comment) are bulk-inserted with `tests.queue_seed.seed_items`: half open, a tenth in the team pools, the rest
resolved; every fourth member's open items are overdue; ten topics. A responder so sees about 1/20 of the items.

Each operation is sent `--requests` times back to back (one at a time, after a few warm-up requests, at most
`--op-seconds` per operation). No comment is processed: the app gets an idle stand-in for the analyser, the SLA
clock and the job reconciler sleep through the run so they do not touch the seeded items, and the per-key rate
limit is off (the benchmark's keys send far more than a person would). For an operation slower than
`--explain-ms` at p50, its slowest SQL statement is captured and its plan printed (EXPLAIN ANALYZE on
PostgreSQL, EXPLAIN QUERY PLAN on SQLite). `--extra-sql` runs statements after seeding (e.g. a candidate index)
so a proposed fix can be measured on the same data.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import re
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from classifiers.pipeline import Analysis
from service import migrate
from service.auth import keys
from service.database import create_engine, transaction
from service.models import ItemState, QueueItem, Role
from service.models.base import utcnow
from service.settings import Settings
from switchboard.app import create_app
from tests.queue_seed import seed_items

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ADMIN_KEY = f"sbk_bench-{uuid.uuid4().hex}{uuid.uuid4().hex}"
SOURCE = "intranet"
TEAMS = 20
MEMBERS_PER_TEAM = 10
TOPICS = [f"topic-{i}" for i in range(10)]
PAGE = 50
DEEP_PAGE = 20
WARM_UP = 3
IDLE = timedelta(days=1).total_seconds()  # the SLA clock and reconciler never wake during a run


def log(message: str) -> None:
    """Progress, on stderr (stdout carries only the results)."""
    print(f"# {message}", file=sys.stderr, flush=True)


class IdleAnalyser:
    """Stands in for the model (the Analyser protocol): this benchmark never processes a comment."""

    model_version = "benchmark-idle"

    async def analyse(self, texts: Sequence[str]) -> list[Analysis]:
        raise RuntimeError(f"the queue benchmark processes no comments (asked to analyse {len(texts)})")

    async def aclose(self) -> None:
        return None


# ---- data -------------------------------------------------------------------------------------------------


def member_id(k: int) -> str:
    return f"m{k:03d}"


def team_id(t: int) -> str:
    return f"t{t:02d}"


def shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` near-equal whole numbers."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def create_directory(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    """The source, 200 members and 20 teams, through the admin API."""
    response = await client.post("/v1/admin/sources", json={"slug": SOURCE, "name": "Intranet"}, headers=admin)
    response.raise_for_status()
    for k in range(TEAMS * MEMBERS_PER_TEAM):
        member = {"id": member_id(k), "name": f"Member {k}"}
        (await client.post("/v1/admin/members", json=member, headers=admin)).raise_for_status()
    for t in range(TEAMS):
        members = [member_id(t * MEMBERS_PER_TEAM + i) for i in range(MEMBERS_PER_TEAM)]
        team = {"id": team_id(t), "name": f"Team {t}", "members": members, "lead": members[0]}
        (await client.post("/v1/admin/teams", json=team, headers=admin)).raise_for_status()


async def seed(app: FastAPI, items: int) -> None:
    """`items` queue items over the teams and members (see the module docstring for the mix)."""
    factory = app.state.services.session_factory
    members = TEAMS * MEMBERS_PER_TEAM
    pool, rest = items // 10, items - items // 10
    opened, resolved = rest * 5 // 9, rest - rest * 5 // 9
    now = utcnow()
    batches: list[dict[str, Any]] = []
    for k, (n_open, n_resolved) in enumerate(zip(shares(opened, members), shares(resolved, members), strict=True)):
        owner = {"member": member_id(k), "team": team_id(k // MEMBERS_PER_TEAM)}
        # seed_items' SLA is 4 h from `now`: starting 6 h ago makes every fourth member's open items overdue.
        late = now - timedelta(hours=6) if k % 4 == 0 else now
        batches.append({**owner, "count": n_open, "state": ItemState.open, "now": late})
        batches.append({**owner, "count": n_resolved, "state": ItemState.resolved, "now": now - timedelta(days=3)})
    for t, n_pool in enumerate(shares(pool, TEAMS)):
        batches.append({"member": None, "team": team_id(t), "count": n_pool, "state": ItemState.open, "now": now})
    for i in range(0, len(batches), 40):
        async with transaction(factory) as session:
            for batch in batches[i : i + 40]:
                if batch["count"]:
                    await seed_items(
                        session, source=SOURCE, count=batch["count"], team=batch["team"], member=batch["member"],
                        state=batch["state"], now=batch["now"],
                    )  # fmt: skip
    # One UPDATE per topic at the end: an UPDATE per batch would scan an unanalysed, growing table on PostgreSQL.
    async with transaction(factory) as session:
        for n, topic in enumerate(TOPICS):
            owners = [member_id(k) for k in range(n, TEAMS * MEMBERS_PER_TEAM, len(TOPICS))]
            teams = [team_id(t) for t in range(n, TEAMS, len(TOPICS))]
            pooled = sa.and_(col(QueueItem.member_id).is_(None), col(QueueItem.team_id).in_(teams))
            await session.execute(
                sa.update(QueueItem).where(sa.or_(col(QueueItem.member_id).in_(owners), pooled)).values(topic=topic)
            )


async def responder_key(app: FastAPI, member: str) -> dict[str, str]:
    """A responder key bound to `member`, created as `switchboard create-key` does."""
    async with transaction(app.state.services.session_factory) as session:
        _, raw = await keys.create_key(
            session, role=Role.responder, name=f"bench {member}", member_id=member, now=utcnow()
        )
    return {"Authorization": f"Bearer {raw}"}


# ---- measuring ------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of `values` (q in 0..100); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass(slots=True)
class Result:
    """One operation's latencies (seconds) on one database; `plan` when it was slow enough to explain."""

    database: str
    operation: str
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    note: str = ""
    plan: list[str] = field(default_factory=list)


Request = Callable[[], Awaitable[httpx.Response]]


async def measure(database: str, operation: str, request: Request, args: argparse.Namespace) -> Result:
    """`--requests` sequential requests (after a warm-up), stopping early after `--op-seconds`."""
    result = Result(database, operation)
    for _ in range(WARM_UP):
        await request()
    deadline = time.monotonic() + args.op_seconds
    for _ in range(args.requests):
        started = time.perf_counter()
        response = await request()
        elapsed = time.perf_counter() - started
        if response.status_code >= 300:
            result.failures += 1
            result.note = f"{response.status_code} {response.text[:120]}"
        else:
            result.latencies.append(elapsed)
        if time.monotonic() > deadline:
            break
    return result


@dataclass(slots=True)
class Statement:
    sql: str
    parameters: Any
    seconds: float


@contextmanager
def captured(engine: AsyncEngine) -> Iterator[list[Statement]]:
    """The SQL statements the engine runs inside the block, with their parameters and durations."""
    seen: list[Statement] = []
    starts: list[float] = []

    def before(_conn: Any, _cursor: Any, _sql: str, _params: Any, _context: Any, _many: bool) -> None:
        starts.append(time.perf_counter())

    def after(_conn: Any, _cursor: Any, sql: str, params: Any, _context: Any, _many: bool) -> None:
        seen.append(Statement(sql, params, time.perf_counter() - starts.pop()))

    sa.event.listen(engine.sync_engine, "before_cursor_execute", before)
    sa.event.listen(engine.sync_engine, "after_cursor_execute", after)
    try:
        yield seen
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", before)
        sa.event.remove(engine.sync_engine, "after_cursor_execute", after)


async def explain(engine: AsyncEngine, statement: Statement) -> list[str]:
    """The plan of one captured statement, in a transaction that is rolled back."""
    postgres = engine.dialect.name == "postgresql"
    prefix = "EXPLAIN (ANALYZE, BUFFERS) " if postgres else "EXPLAIN QUERY PLAN "
    async with engine.connect() as connection:
        rows = (await connection.exec_driver_sql(prefix + statement.sql, statement.parameters)).all()
        await connection.rollback()
    if postgres:
        return [str(row[0]) for row in rows]
    # EXPLAIN QUERY PLAN rows: (id, parent id, unused, detail); indent each node under its parent.
    depth: dict[int, int] = {0: -1}
    lines = []
    for row in rows:
        node, parent, _unused, detail = tuple(row)
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + str(detail))
    return lines


async def explain_slowest(engine: AsyncEngine, request: Request) -> list[str]:
    """Run the request once more, capturing its SQL; the slowest statement with its plan."""
    with captured(engine) as statements:
        await request()
    if not statements:
        return ["(no SQL captured)"]
    slowest = max(statements, key=lambda s: s.seconds)
    sql = re.sub(r"^SELECT .{200,}? FROM ", "SELECT ... FROM ", " ".join(slowest.sql.split()))
    header = [f"slowest of {len(statements)} statements ({slowest.seconds * 1000:.1f} ms): {sql}"]
    return header + await explain(engine, slowest)


# ---- one database -------------------------------------------------------------------------------------------


@asynccontextmanager
async def running(database_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan running, behind an in-process client."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "bootstrap_admin_key": ADMIN_KEY,
        "sla_sweep_interval_seconds": IDLE,
        "reconcile_interval_seconds": IDLE,
        "log_level": "WARNING",
    }
    if "rate_limit_per_key_per_minute" in Settings.model_fields:  # one key sends ~1 000 requests a minute here
        values["rate_limit_per_key_per_minute"] = 0
    settings = Settings(**values)
    app = create_app(settings, analyser=IdleAnalyser())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://switchboard.bench", timeout=60) as client:
            yield app, client


async def deep_cursor(client: httpx.AsyncClient, headers: dict[str, str]) -> tuple[int, str]:
    """The cursor of page DEEP_PAGE of this caller's queue (or of its last page, if it is shorter)."""
    cursor: str | None = None
    page = 1
    while page < DEEP_PAGE:
        params: dict[str, Any] = {"limit": PAGE, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/v1/queue", params=params, headers=headers)
        response.raise_for_status()
        following = response.json()["next_cursor"]
        if following is None:
            break
        cursor, page = following, page + 1
    if cursor is None:
        raise RuntimeError(f"the queue has fewer than {PAGE + 1} items")
    return page, cursor


async def bench_database(database: str, database_url: str, args: argparse.Namespace) -> tuple[list[Result], str]:
    """Seed one database and time every operation on it; returns the results and a line about the inserts."""
    engine = create_engine(database_url)
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()
    results: list[Result] = []
    async with running(database_url) as (app, client):
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        started = time.monotonic()
        await create_directory(client, admin)
        directory_seconds = time.monotonic() - started
        started = time.monotonic()
        await seed(app, args.items)
        seed_seconds = time.monotonic() - started
        engine = app.state.services.engine
        async with engine.begin() as connection:
            if database == "postgresql":  # what autovacuum does shortly after a bulk load
                await connection.exec_driver_sql("ANALYZE")
            for statement in args.extra_sql:
                await connection.exec_driver_sql(statement)
        inserted = (
            f"{database}: directory (20 teams, 200 members) through the API {directory_seconds:.1f} s; "
            f"{args.items} items + comments inserted in {seed_seconds:.1f} s "
            f"({args.items / seed_seconds:,.0f} items/s)"
        )
        log(inserted)
        responder = await responder_key(app, member_id(1))  # team t00, not its lead
        claimers = [await responder_key(app, member_id(k)) for k in range(0, TEAMS * MEMBERS_PER_TEAM, 10)]
        first_item = (await client.get("/v1/queue", params={"limit": PAGE}, headers=responder)).json()["items"]
        item_ids = [i["id"] for i in first_item]
        cursors = {"admin": await deep_cursor(client, admin), "responder": await deep_cursor(client, responder)}

        def listing(headers: dict[str, str], **params: Any) -> Request:
            return lambda: client.get("/v1/queue", params={"limit": PAGE, **params}, headers=headers)

        turn = iter(range(10**9))

        def claim_next() -> Awaitable[httpx.Response]:
            return client.post("/v1/queue/claim-next", headers=claimers[next(turn) % len(claimers)])

        def read_item() -> Awaitable[httpx.Response]:
            return client.get(f"/v1/queue/{item_ids[next(turn) % len(item_ids)]}", headers=responder)

        operations: list[tuple[str, Request]] = []
        for who, headers in (("admin", admin), ("responder", responder)):
            operations += [
                (f"list first page ({who})", listing(headers)),
                (f"list page {cursors[who][0]} by cursor ({who})", listing(headers, cursor=cursors[who][1])),
                (f"list priority=urgent ({who})", listing(headers, priority="urgent")),
                (f"list overdue=true ({who})", listing(headers, overdue="true")),
                (f"list topic={TOPICS[3]} ({who})", listing(headers, topic=TOPICS[3])),
            ]
        operations += [("GET /v1/queue/{id} (responder)", read_item), ("claim-next (20 responders)", claim_next)]
        for name, request in operations:
            result = await measure(database, name, request, args)
            if result.latencies and percentile(result.latencies, 50) * 1000 > args.explain_ms:
                result.plan = await explain_slowest(engine, request)
            log(f"{database}: {name}: {len(result.latencies)} requests, p50 "
                f"{percentile(result.latencies, 50) * 1000:.1f} ms")  # fmt: skip
            results.append(result)
    return results, inserted


async def bench_sqlite(args: argparse.Namespace) -> tuple[list[Result], str]:
    with tempfile.TemporaryDirectory(prefix="switchboard-queue-bench-") as folder:
        return await bench_database("sqlite", f"sqlite+aiosqlite:///{Path(folder) / 'queue.db'}", args)


async def bench_postgresql(args: argparse.Namespace) -> tuple[list[Result], str]:
    import asyncpg  # type: ignore[import-untyped]

    admin_url = make_url(args.postgres_url)
    connect = {"host": admin_url.host, "port": admin_url.port or 5432, "user": admin_url.username,
               "password": admin_url.password, "database": admin_url.database}  # fmt: skip
    name = f"switchboard_queue_bench_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(**connect, timeout=5)
    await connection.execute(f'CREATE DATABASE "{name}"')
    await connection.close()
    log(f"postgresql: created database {name}")
    url = admin_url.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)
    try:
        return await bench_database("postgresql", url, args)
    finally:
        connection = await asyncpg.connect(**connect, timeout=5)
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.close()
        log(f"postgresql: dropped database {name}")


# ---- output -------------------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table: the first two columns left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


def report(args: argparse.Namespace, results: Sequence[Result], inserts: Sequence[str]) -> None:
    print(f"Queue latency, {args.items} items (python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})")  # fmt: skip
    print("No comment is processed: the app runs with an idle stand-in for the analyser (classifiers/pipeline.py's")
    print("Analyser protocol), the SLA clock and reconciler asleep, the per-key rate limit off. Requests are")
    print("sequential, in-process (ASGI). PostgreSQL is ANALYZEd after the load; SQLite is not (the service never is).")
    for statement in args.extra_sql:
        print(f"Extra SQL after seeding: {statement}")
    print()
    for line in inserts:
        print(line)
    print()
    rows = [
        [r.database, r.operation, str(len(r.latencies)),
         *(ms(percentile(r.latencies, q)) for q in (50, 95, 99)), str(r.failures) if r.failures else ""]
        for r in results
    ]  # fmt: skip
    print(table(["database", "operation", "n", "p50 ms", "p95 ms", "p99 ms", "failed"], rows))
    for r in results:
        if r.note:
            print(f"\n{r.database} {r.operation}: last failure {r.note}")
    slow = [r for r in results if r.plan]
    if slow:
        print(f"\nPlans of the operations slower than {args.explain_ms:g} ms at p50:")
    for r in slow:
        print(f"\n[{r.database}] {r.operation}")
        for line in r.plan:
            print(f"    {line}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000, help="queue items to insert (1 000 .. 1 000 000)")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per operation (1 .. 2 000)")
    parser.add_argument("--op-seconds", type=float, default=6.0, help="at most this long per operation")
    parser.add_argument("--explain-ms", type=float, default=100.0, help="print the plan of operations slower at p50")
    parser.add_argument("--skip-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="admin URL of a loopback PostgreSQL")
    parser.add_argument("--extra-sql", action="append", default=[], help="SQL to run after seeding (repeatable)")
    args = parser.parse_args(argv)
    if not 1_000 <= args.items <= 1_000_000:
        parser.error("--items must be between 1 000 and 1 000 000")
    if not 1 <= args.requests <= 2_000:
        parser.error("--requests must be between 1 and 2 000")
    if make_url(args.postgres_url).host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("--postgres-url must be on loopback (the benchmark creates and drops a database there)")
    return args


async def run(args: argparse.Namespace) -> int:
    results: list[Result] = []
    inserts: list[str] = []
    runs = [bench_sqlite] if args.skip_postgres else [bench_sqlite, bench_postgresql]
    for bench in runs:
        got, inserted = await bench(args)
        results += got
        inserts.append(inserted)
    report(args, results, inserts)
    return 1 if any(r.failures for r in results) else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    code = asyncio.run(run(args))
    print(f"\ntotal run time {time.monotonic() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
