"""Shared fixtures: one loaded model per test session, databases on SQLite and PostgreSQL, real Redis.

PostgreSQL and Redis tests run when the servers answer; otherwise they are skipped with the reason, unless
SWITCHBOARD_TEST_REQUIRE_SERVICES=1 (set by .ci/run), which turns a missing server into a failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from classifiers.encoder import Encoder
from classifiers.pipeline import BatchingAnalyser
from service import crypto, migrate
from service.analytics import upkeep
from service.analytics.tables import AnalyticsFact
from service.classification.loader import build_pipeline
from service.database import create_engine, create_session_factory, table
from service.jobs.backends import InlineBackend
from service.models.base import utcnow
from service.settings import Settings
from switchboard.app import create_app
from tests.clock import FakeClock
from tests.factories import ADMIN_KEY, TEST_ENCRYPTION_KEY

POSTGRES_ADMIN_URL = os.environ.get("SWITCHBOARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# pytest-xdist runs the suite in several processes (scripts/test: one per core): each gets a Redis database of its
# own (15, 14, ...), since tests empty theirs; databases on PostgreSQL and SQLite files are per process already.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)


def _own_redis_database(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{int(parts.path.lstrip('/') or 0) - _WORKER}"))


REDIS_URL = _own_redis_database(os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
REQUIRE_SERVICES = os.environ.get("SWITCHBOARD_TEST_REQUIRE_SERVICES") == "1"
# Every test app and every process a test starts encrypts secrets at rest with this key (tests of the key handling
# itself set their own); code under test outside an app's lifespan uses it too.
os.environ.setdefault("SWITCHBOARD_ENCRYPTION_KEYS", TEST_ENCRYPTION_KEY)
crypto.install(crypto.Keyring.from_keys([TEST_ENCRYPTION_KEY]))


def unavailable(what: str, why: str) -> None:
    """Skip (or, when CI requires the services, fail) a test whose server is not there."""
    message = f"{what} is not reachable ({why}); set SWITCHBOARD_TEST_REQUIRE_SERVICES=1 to make this an error"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


# ---- the model: loaded once per test session --------------------------------------------------------------


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    """The real all-MiniLM-L6-v2 encoder, shared by every test."""
    return Encoder()


@pytest.fixture(scope="session")
async def analyser(encoder: Encoder) -> AsyncIterator[BatchingAnalyser]:
    """The real batching analysis pipeline over the shared encoder."""
    batching = BatchingAnalyser(build_pipeline(Settings(), encoder))
    yield batching
    await batching.aclose()


# ---- databases --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file migrated once; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "switchboard.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await migrate.upgrade(engine)
    await engine.dispose()
    return path


async def _postgres_reachable() -> str | None:
    import asyncpg  # type: ignore[import-untyped]

    url = make_url(POSTGRES_ADMIN_URL)
    try:
        connection = await asyncpg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            database=url.database,
            timeout=3,
        )
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    await connection.close()
    return None


@pytest.fixture(scope="session")
async def postgres_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for this test session, migrated; dropped at the end."""
    import asyncpg

    problem = await _postgres_reachable()
    if problem:
        unavailable(f"PostgreSQL at {POSTGRES_ADMIN_URL}", problem)
    admin = make_url(POSTGRES_ADMIN_URL)
    name = f"switchboard_test_{uuid.uuid4().hex[:10]}"
    kwargs: dict[str, Any] = {
        "host": admin.host,
        "port": admin.port or 5432,
        "user": admin.username,
        "password": admin.password,
        "database": admin.database,
    }
    connection = await asyncpg.connect(**kwargs)
    await connection.execute(f'CREATE DATABASE "{name}"')
    await connection.close()
    url = admin.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    await migrate.upgrade(engine)
    await engine.dispose()
    yield url
    connection = await asyncpg.connect(**kwargs)
    await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await connection.close()


async def truncate_all(url: str) -> None:
    """Empty every table (PostgreSQL), keeping the schema."""
    engine = create_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    async with engine.begin() as connection:
        await connection.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated, empty database: each test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "switchboard.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database")
    asyncio.run(truncate_all(url))  # a sync fixture: no loop is running here
    return url


@pytest.fixture
async def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated, empty SQLite database (for tests about SQLite itself)."""
    path = tmp_path / "switchboard.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


# ---- Redis ------------------------------------------------------------------------------------------------


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """A real Redis (database 15 by default), emptied before and after the test."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        unavailable(f"Redis at {REDIS_URL}", f"{type(exc).__name__}: {exc}")
    await client.flushdb()
    yield REDIS_URL
    await client.flushdb()
    await client.aclose()


# ---- the app ----------------------------------------------------------------------------------------------


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Test settings: fast reconciler, a known admin key."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "bootstrap_admin_key": ADMIN_KEY,
        "reconcile_interval_seconds": 0.5,
        "job_backoff_seconds": 0.05,
        "encryption_keys": TEST_ENCRYPTION_KEY,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def running_app(
    settings: Settings, analyser: BatchingAnalyser | None, *, clock: FakeClock | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, behind an in-process httpx client (on `clock`, else the wall clock)."""
    app = create_app(settings, analyser=analyser, clock=clock or utcnow)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://switchboard.test") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client
    await assert_analytics_facts_kept(settings.database_url)


async def assert_analytics_facts_kept(database_url: str) -> None:
    """After every test that ran the app: the analytics facts its use cases kept at commit equal a rebuild."""
    engine = create_engine(database_url)
    try:
        async with create_session_factory(engine)() as session:
            fact = table(AnalyticsFact)
            snapshot = sa.select(fact).order_by(fact.c.comment_id)
            kept = [tuple(row) for row in await session.execute(snapshot)]
            await upkeep.rebuild(session)
            rebuilt = [tuple(row) for row in await session.execute(snapshot)]
            await session.rollback()
    finally:
        await engine.dispose()
    stale = sorted(set(kept) ^ set(rebuilt), key=str)[:4]
    assert kept == rebuilt, f"the analytics facts kept at commit differ from a rebuild: {stale}"


AppFactory = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
def clock() -> FakeClock:
    """The test's clock: `clock.advance(seconds)` lets time pass for the app of the `client` fixture."""
    return FakeClock()


@pytest.fixture
async def client(database_url: str, analyser: BatchingAnalyser, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    """An API client on a fresh database (SQLite and PostgreSQL), with the in-process job backend, on `clock`."""
    async with running_app(make_settings(database_url), analyser, clock=clock) as api:
        yield api


async def drain(client: httpx.AsyncClient) -> None:
    """Wait until the in-process backend has processed everything it was handed."""
    queue = client.app.state.services.backend  # type: ignore[attr-defined]
    assert isinstance(queue, InlineBackend)
    await queue.drain()
