"""Engine, sessions and the few dialect-specific statements Switchboard needs (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 30_000

SessionFactory = async_sessionmaker[AsyncSession]


def create_engine(database_url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine; on SQLite: WAL, a busy timeout, foreign keys, and BEGIN IMMEDIATE transactions."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return create_async_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=10)

    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    # One connection per process: SQLite has one writer at a time anyway, and waiting for the pool is a fair
    # FIFO queue, whereas connections competing for the write lock poll with back-off (seconds of tail latency).
    engine = create_async_engine(
        url,
        echo=echo,
        pool_size=1,
        max_overflow=0,
        pool_timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so that we can BEGIN IMMEDIATE ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # A deferred transaction that reads and then writes fails with SQLITE_BUSY (no waiting) when another
        # writer got in between; taking the write lock up front makes concurrent writers queue instead.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    """Sessions that keep objects usable after commit (we return them from use cases)."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def transaction(factory: SessionFactory) -> AsyncIterator[AsyncSession]:
    """One unit of work outside a request (jobs, CLI): commits on success, rolls back on error."""
    async with factory() as session, session.begin():
        yield session


async def end_transaction(session: AsyncSession) -> None:
    """Commit what a request did so far and give its connection back, before slow work that needs no database.

    For read-mostly use cases that then run the model (classify, explain): on SQLite an open transaction holds
    the write lock (BEGIN IMMEDIATE) and the process's only connection, so every other request would wait for
    the model. The session stays usable; a later statement begins a new transaction, committed by its owner.
    """
    await session.commit()


async def insert_ignore(
    session: AsyncSession,
    table: sa.Table,
    values: Mapping[str, Any],
    *,
    conflict_columns: Sequence[str],
    returning: sa.ColumnElement[Any] | None = None,
    update_columns: Sequence[str] = (),
) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING (or DO UPDATE SET `update_columns`, an upsert) in one statement.

    Returns the `returning` value, or None when the row existed and nothing was updated.
    """
    dialect = dialect_name(session)
    stmt: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table).values(**values)
    if update_columns:
        stmt = stmt.on_conflict_do_update(
            index_elements=conflict_columns, set_={c: stmt.excluded[c] for c in update_columns}
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=conflict_columns)
    if returning is not None:
        stmt = stmt.returning(returning)
        return (await session.execute(stmt)).scalar_one_or_none()
    await session.execute(stmt)
    return None


def dialect_name(session: AsyncSession) -> str:
    """'sqlite' or 'postgresql'."""
    bind = session.get_bind()
    return bind.dialect.name


async def ping(engine: AsyncEngine) -> None:
    """Raise if the database cannot answer a trivial query."""
    async with engine.connect() as connection:
        await connection.execute(sa.text("SELECT 1"))


def table(model: type[Any]) -> sa.Table:
    """The Core table behind a SQLModel class (typed, for insert constructs)."""
    found: sa.Table = model.__table__
    return found
