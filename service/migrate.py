"""Alembic, driven from code: `switchboard migrate`, `serve` on SQLite, and the tests use these."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from service import crypto
from service.analytics import upkeep
from service.database import create_session_factory

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic config for this database (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


FACTS_REVISION = "0007"  # the migration that added analytics_fact, which `upgrade` fills when it crosses it


def head_revision() -> str | None:
    """The newest migration in the code."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the database up to `revision` (default: the newest)."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))

    def _upgrade(connection: sa.Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    before = await current_revision(engine)
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)
    after = await current_revision(engine)
    if (before is None or before < FACTS_REVISION) and after is not None and after >= FACTS_REVISION:
        await rebuild_analytics(engine)


async def rebuild_analytics(engine: AsyncEngine) -> int:
    """Derive the analytics facts afresh from the comments, items and audit trail; the number of rows."""
    async with create_session_factory(engine)() as session:
        count = await upkeep.rebuild(session)
        await session.commit()
        if engine.dialect.name == "postgresql":
            await session.execute(sa.text("ANALYZE analytics_fact"))  # the planner's statistics, at once
            await session.commit()
    return count


async def current_revision(engine: AsyncEngine) -> str | None:
    """The migration the database is at (None: not migrated)."""

    def _current(connection: sa.Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(_current)


async def encrypt_secrets(engine: AsyncEngine, keyring: crypto.Keyring, *, rotate: bool = False) -> int:
    """Encrypt the secrets an older version stored in plaintext (with `rotate`: re-encrypt every one under the
    newest key). Idempotent; returns how many values were rewritten."""
    import service.tables  # noqa: F401  (registers every table, so every encrypted column is found)

    return await crypto.encrypt_all(engine, keyring, SQLModel.metadata, rotate=rotate)
