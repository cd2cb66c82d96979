"""The `switchboard` command and the migrations: what a newcomer and an operator run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from service import migrate
from service.database import create_engine
from service.settings import Settings, normalise_database_url

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603  (our own CLI)
        [sys.executable, "-m", "switchboard.cli", *args],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "command",
    ["serve", "worker", "migrate", "openapi", "create-key", "train", "evaluate", "evaluate-topics", "verify-audit"],
)
def test_every_command_has_help(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()


def test_create_key_prints_a_working_key_once(tmp_path: Path) -> None:
    env = {"SWITCHBOARD_DATABASE_URL": f"sqlite:///{tmp_path}/sb.db"}
    result = run_cli("create-key", "--role", "admin", "--name", "ops", env=env)
    assert result.returncode == 0, result.stderr
    raw = result.stdout.strip()
    assert raw.startswith("sbk_")
    assert len(raw) >= 4 + 43  # 256 random bits
    import asyncio

    from service.auth import keys
    from service.database import create_session_factory
    from service.models.base import utcnow

    async def check() -> None:
        engine = create_engine(Settings(database_url=env["SWITCHBOARD_DATABASE_URL"]).database_url)
        async with create_session_factory(engine)() as session:
            principal = await keys.authenticate(session, f"Bearer {raw}", now=utcnow())
            stored = (await session.execute(sa.text("SELECT key_hash FROM api_key"))).scalar_one()
        await engine.dispose()
        assert principal.role == "admin"
        assert raw not in stored  # only the hash is kept

    asyncio.run(check())


def test_responder_key_needs_a_member(tmp_path: Path) -> None:
    result = run_cli(
        "create-key", "--role", "responder", env={"SWITCHBOARD_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    )
    assert result.returncode != 0
    assert "--member" in result.stderr


def test_openapi_command_writes_the_document(tmp_path: Path) -> None:
    out = tmp_path / "openapi.json"
    result = run_cli("openapi", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["info"]["title"] == "Switchboard"


def test_bad_database_url_is_a_clear_error() -> None:
    result = run_cli("migrate", env={"SWITCHBOARD_DATABASE_URL": "mysql://root@localhost/x"})
    assert result.returncode != 0
    assert "sqlite:// or postgresql://" in result.stderr


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("sqlite:///var/x.db", "sqlite+aiosqlite:///var/x.db"),
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_plain_database_urls_map_to_the_async_drivers(given: str, used: str) -> None:
    assert normalise_database_url(given) == used


async def test_migrations_create_exactly_the_models(database_url: str) -> None:
    engine = create_engine(database_url)

    def diff(connection: sa.Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, SQLModel.metadata))

    async with engine.connect() as connection:
        differences = await connection.run_sync(diff)
    assert await migrate.current_revision(engine) == migrate.head_revision()
    await engine.dispose()
    assert differences == []


async def test_app_refuses_to_start_on_an_unmigrated_database(tmp_path: Path) -> None:
    from switchboard.app import create_app

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/empty.db"))
    with pytest.raises(RuntimeError, match="switchboard migrate"):
        async with app.router.lifespan_context(app):
            pass
