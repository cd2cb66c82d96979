"""Throwaway databases for benchmarks: a fresh, migrated PostgreSQL database or SQLite file, gone afterwards."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy.engine import make_url

from service import migrate
from service.database import create_engine


async def _migrated(url: str) -> str:
    engine = create_engine(url)
    await migrate.upgrade(engine)
    await engine.dispose()
    return url


@asynccontextmanager
async def temporary_postgres(admin_url_text: str, prefix: str) -> AsyncIterator[str]:
    """A new database `<prefix>_<random>` on the server of `admin_url_text`, migrated; dropped afterwards."""
    import asyncpg  # type: ignore[import-untyped]

    admin_url = make_url(admin_url_text)
    connect = {"host": admin_url.host, "port": admin_url.port or 5432, "user": admin_url.username,
               "password": admin_url.password, "database": admin_url.database}  # fmt: skip
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(**connect, timeout=5)
    await connection.execute(f'CREATE DATABASE "{name}"')
    await connection.close()
    url = admin_url.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)
    try:
        yield await _migrated(url)
    finally:
        connection = await asyncpg.connect(**connect, timeout=5)
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.close()


@asynccontextmanager
async def temporary_sqlite(prefix: str) -> AsyncIterator[str]:
    """A new SQLite file in a temporary folder, migrated; removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"{prefix}-") as folder:
        yield await _migrated(f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}")
