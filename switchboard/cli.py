"""The `switchboard` command: serve, worker, migrate, openapi, create-key, verify-audit, and the encryption keys
(generate-encryption-key, rotate-encryption-key)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Annotated

import typer

from service import logs
from service.models import Role
from service.settings import Settings

app = typer.Typer(help="Switchboard: comment moderation and response routing.", no_args_is_help=True)

OPENAPI_PATH = Path("openapi/openapi.json")


async def _migrate(settings: Settings) -> str | None:
    from service import crypto, migrate
    from service.database import create_engine

    keyring = crypto.load(settings)
    crypto.install(keyring)
    engine = create_engine(settings.database_url)
    try:
        await migrate.upgrade(engine)
        encrypted = await migrate.encrypt_secrets(engine, keyring)
        if encrypted:
            logging.getLogger(__name__).warning("encrypted %d secrets that were stored in plaintext", encrypted)
        return await migrate.current_revision(engine)
    finally:
        await engine.dispose()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="API processes (use 1 with the in-process job backend).")] = 1,
) -> None:
    """Run the API with uvicorn (on SQLite, migrate the database first)."""
    import uvicorn

    settings = Settings()
    logs.configure(level=settings.log_level, log_format=settings.log_format)
    if settings.is_sqlite:
        asyncio.run(_migrate(settings))
    if workers > 1 and not settings.redis_url:
        raise typer.BadParameter("several API processes need SWITCHBOARD_REDIS_URL (the arq backend)")
    uvicorn.run(
        "switchboard.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level.lower(),
        # JSON: uvicorn's own lines go through our handler. The app logs each request with its id (routers.metrics),
        # which replaces uvicorn's access line (no request id, and the raw path with its query).
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        access_log=False,
        # Longer than the idle timeout of common HTTP client pools, so a platform's pooled connection is not
        # closed under a request it just sent (uvicorn's default of 5 s races clients that keep connections 5 s).
        timeout_keep_alive=75,
    )


@app.command()
def worker() -> None:
    """Run an arq worker (needs SWITCHBOARD_REDIS_URL); restarts its loop if Redis goes away."""
    from arq.worker import create_worker
    from redis.exceptions import RedisError

    from workers.settings import worker_settings

    settings = Settings()
    logs.configure(level=settings.log_level, log_format=settings.log_format)
    log = logging.getLogger("switchboard.worker")
    cls = worker_settings(settings)
    while True:
        try:
            create_worker(cls).run()
            return
        except (ConnectionError, OSError, RedisError) as exc:  # Redis went away: wait and start over
            log.warning("worker lost Redis (%s); retrying in 2 s", exc)
            time.sleep(2)


@app.command()
def migrate() -> None:
    """Apply database migrations up to the newest."""
    settings = Settings()
    revision = asyncio.run(_migrate(settings))
    typer.echo(f"database at migration {revision}")


@app.command()
def openapi(
    output: Annotated[Path, typer.Option(help="Where to write the OpenAPI document.")] = OPENAPI_PATH,
) -> None:
    """Write the OpenAPI document of the API."""
    from switchboard.app import create_app

    document = create_app(Settings()).openapi()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    typer.echo(f"wrote {output}")


@app.command("create-key")
def create_key(
    role: Annotated[Role, typer.Option(help="admin or responder.")],
    member: Annotated[str | None, typer.Option(help="Member id a responder key acts as.")] = None,
    name: Annotated[str, typer.Option(help="A label to recognise the key by.")] = "cli",
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from service.auth import keys
    from service.database import create_engine, create_session_factory, transaction
    from service.directory import members as directory
    from service.errors import NotFound
    from service.models.base import utcnow

    if role is Role.responder and not member:
        raise typer.BadParameter("a responder key needs --member")

    async def _create() -> str:
        settings = Settings()
        if settings.is_sqlite:
            await _migrate(settings)
        engine = create_engine(settings.database_url)
        try:
            async with transaction(create_session_factory(engine)) as session:
                if member is not None:
                    await directory.get_member(session, member)
                _, raw = await keys.create_key(
                    session, role=role, name=name, member_id=member, actor="cli", now=utcnow()
                )
            return raw
        finally:
            await engine.dispose()

    try:
        raw = asyncio.run(_create())
    except NotFound:
        raise typer.BadParameter(
            f"there is no member '{member}' (or it was deleted); add it with POST /v1/admin/members first",
            param_hint="'--member'",
        ) from None
    typer.echo(raw)


@app.command("verify-audit")
def verify_audit() -> None:
    """Walk the audit trail's hash chain: exit 0 if every record verifies, 1 with the first bad record's id."""
    from service.audit import chain as audit
    from service.database import create_engine, create_session_factory

    async def _verify() -> audit.Verification:
        engine = create_engine(Settings().database_url)
        try:
            async with create_session_factory(engine)() as session:
                return await audit.verify(session)
        finally:
            await engine.dispose()

    result = asyncio.run(_verify())
    if result.ok:
        typer.echo(f"audit trail ok: {result.records} records verified")
        return
    typer.echo(f"audit trail broken at record {result.broken_at}: {result.reason}", err=True)
    raise typer.Exit(1)


@app.command("rebuild-analytics")
def rebuild_analytics() -> None:
    """Derive the analytics facts afresh from the comments, their items and the audit trail (safe while serving)."""
    from service import migrate
    from service.database import create_engine

    async def _rebuild() -> int:
        engine = create_engine(Settings().database_url)
        try:
            return await migrate.rebuild_analytics(engine)
        finally:
            await engine.dispose()

    started = time.monotonic()
    count = asyncio.run(_rebuild())
    typer.echo(f"analytics rebuilt: {count} comments in {time.monotonic() - started:.1f} s")


@app.command("generate-encryption-key")
def generate_encryption_key() -> None:
    """Print a new key for SWITCHBOARD_ENCRYPTION_KEYS (a Fernet key); nothing is stored."""
    from service import crypto

    typer.echo(crypto.generate_key())


@app.command("rotate-encryption-key")
def rotate_encryption_key() -> None:
    """Re-encrypt every stored secret under the first key of SWITCHBOARD_ENCRYPTION_KEYS (the others only decrypt).

    Put the new key first and keep the old ones after it, run this, then drop the old keys.
    Nothing is changed (exit 1) if a stored value opens with none of the configured keys.
    """
    from service import crypto
    from service import migrate as migrations
    from service.database import create_engine

    async def _rotate(settings: Settings) -> tuple[int, int] | str:
        keyring = crypto.load(settings)
        crypto.install(keyring)
        engine = create_engine(settings.database_url)
        try:
            current, head = await migrations.current_revision(engine), migrations.head_revision()
            if current != head:
                return f"the database is at migration {current}, the code needs {head}: run `switchboard migrate`"
            return await migrations.encrypt_secrets(engine, keyring, rotate=True), keyring.key_count
        finally:
            await engine.dispose()

    try:
        result = asyncio.run(_rotate(Settings()))
    except crypto.EncryptionKeyError as exc:
        result = str(exc)
    if isinstance(result, str):
        typer.echo(f"rotate-encryption-key: nothing was changed: {result}", err=True)
        raise typer.Exit(1)
    changed, key_count = result
    typer.echo(f"re-encrypted {changed} secrets under the first of {key_count} configured keys")
    if key_count > 1:
        typer.echo("the other keys can now be removed from SWITCHBOARD_ENCRYPTION_KEYS")


_FORWARD = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.command(context_settings=_FORWARD, add_help_option=False)
def train(ctx: typer.Context) -> None:
    """Train the classification heads from the labelled data (options: `switchboard train --help`)."""
    from classifiers.training.train import main as train_main

    raise typer.Exit(train_main(ctx.args, data_dir=Settings().data_dir))


@app.command(context_settings=_FORWARD, add_help_option=False)
def evaluate(ctx: typer.Context) -> None:
    """Print every head's validation score against the published baselines (`switchboard evaluate --help`)."""
    from classifiers.training.evaluate import main as evaluate_main

    raise typer.Exit(evaluate_main(ctx.args, data_dir=Settings().data_dir))


@app.command("evaluate-topics", context_settings=_FORWARD, add_help_option=False)
def evaluate_topics(ctx: typer.Context) -> None:
    """Print few-shot topic accuracy and out-of-scope recall (`switchboard evaluate-topics --help`)."""
    from classifiers.training.topics_eval import main as topics_main

    raise typer.Exit(topics_main(ctx.args, data_dir=Settings().data_dir))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
