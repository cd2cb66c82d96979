"""Secrets at rest: a database dump holds no plaintext credential or signing secret, rotating the encryption key
keeps everything readable, an older database is encrypted in place, and the keys come from where the docs say.

The keyring is process-global (crypto.install): every test here that installs another one gets the suite's back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from asyncio.subprocess import PIPE
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel, col

from classifiers.pipeline import BatchingAnalyser
from service import crypto
from service.database import create_engine
from service.notifications import channels
from service.outbound.tables import Channel
from service.signing import generate_secret
from tests.conftest import make_settings, running_app
from tests.factories import ADMIN, TEST_ENCRYPTION_KEY, comment_payload, create_source, post_event

ROOT = Path(__file__).resolve().parents[2]
SMTP_PASSWORD = "smtp-pa55word-at-rest-check"
SLACK_TOKEN = "slackTokenAtRestCheck0123456789"
SLACK_URL = f"https://hooks.slack.com/services/T000/B000/{SLACK_TOKEN}"


@pytest.fixture(autouse=True)
def suite_keyring() -> Iterator[None]:
    """Whatever keyring a test's app installs, the next test finds the suite's."""
    try:
        yield
    finally:
        crypto.install(crypto.Keyring.from_keys([TEST_ENCRYPTION_KEY]))


def run_cli(*args: str, database_url: str, keys: str | None) -> subprocess.CompletedProcess[str]:
    """`switchboard <args>` on this database, with exactly these encryption keys (None: the variable unset)."""
    env = {k: v for k, v in os.environ.items() if k != "SWITCHBOARD_ENCRYPTION_KEYS"}
    env["SWITCHBOARD_DATABASE_URL"] = database_url
    if keys is not None:
        env["SWITCHBOARD_ENCRYPTION_KEYS"] = keys
    return subprocess.run(  # noqa: S603  (our own CLI)
        [sys.executable, "-m", "switchboard.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def add_channels(client: httpx.AsyncClient) -> None:
    """An e-mail channel with an SMTP password and a Slack channel, added through the admin API."""
    bodies: list[dict[str, Any]] = [
        {
            "id": "mail", "name": "Corporate mail", "kind": "email",
            "config": {
                "host": "smtp.corp.example", "port": 587, "security": "starttls", "username": "switchboard",
                "password": SMTP_PASSWORD, "from_address": "switchboard@corp.example",
            },
        },
        {"id": "slack", "name": "Comms Slack", "kind": "slack", "config": {"url": SLACK_URL}},
    ]  # fmt: skip
    for body in bodies:
        response = await client.post("/v1/admin/channels", json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        assert SMTP_PASSWORD not in response.text
        assert SLACK_TOKEN not in response.text


async def stored_values(database_url: str) -> dict[str, str]:
    """Every encrypted column's value as it is stored (read as plain text, bypassing the type)."""
    engine = create_engine(database_url)
    found: dict[str, str] = {}
    async with engine.connect() as connection:
        for slug, secret, previous in await connection.execute(
            sa.text("SELECT slug, secret, previous_secret FROM source ORDER BY slug")
        ):
            found[f"source:{slug}:secret"] = secret
            if previous is not None:
                found[f"source:{slug}:previous_secret"] = previous
        for channel_id, credentials in await connection.execute(
            sa.text("SELECT id, credentials FROM channel ORDER BY id")
        ):
            found[f"channel:{channel_id}:credentials"] = credentials
    await engine.dispose()
    return found


async def database_dump(database_url: str) -> bytes:
    """Everything the database holds, as an attacker with a backup would see it."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = Path(str(url.database))
        with sqlite3.connect(path) as raw:  # fold the write-ahead log into the file first
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        raw.close()
        files = [path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-journal"))]
        return b"".join(f.read_bytes() for f in files if f.exists())
    pg_dump = shutil.which("pg_dump")
    if pg_dump is not None:
        libpq_url = url.set(drivername="postgresql").render_as_string(hide_password=False)
        process = await asyncio.create_subprocess_exec(
            pg_dump, "--no-owner", f"--dbname={libpq_url}", stdout=PIPE, stderr=PIPE
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        return out
    engine = create_engine(database_url)  # no pg_dump here: every value of every table, as text
    chunks: list[str] = []
    async with engine.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            rows = await connection.execute(sa.text(f'SELECT * FROM "{table.name}"'))  # noqa: S608
            chunks.extend(repr(tuple(row)) for row in rows)
    await engine.dispose()
    return "\n".join(chunks).encode()


async def webhook_status(client: httpx.AsyncClient, secret: str, comment_id: str) -> int:
    """The status a comment signed with `secret` gets from the webhook endpoint."""
    return (await post_event(client, secret, comment_payload(comment_id))).status_code


async def test_a_database_dump_holds_no_plaintext_secret_yet_every_secret_still_verifies(
    database_url: str, analyser: BatchingAnalyser
) -> None:
    settings = make_settings(database_url)
    async with running_app(settings, analyser) as client:
        first = await create_source(client)
        rotated = await client.post("/v1/admin/sources/intranet/rotate-secret", headers=ADMIN)
        assert rotated.status_code == 200, rotated.text
        second = rotated.json()["secret"]
        await add_channels(client)

    dump = await database_dump(database_url)
    plaintexts = {
        "the source's signing secret": second,
        "its previous signing secret": first,
        "the SMTP password": SMTP_PASSWORD,
        "the Slack webhook URL": SLACK_URL,
        "the Slack webhook's token": SLACK_TOKEN,
    }
    for what, value in plaintexts.items():
        assert value.encode() not in dump, f"{what} is in the dump in plaintext"
        assert value.removeprefix("whsec_").encode() not in dump, f"{what} is in the dump in plaintext"
    assert b"Corporate mail" in dump  # the dump is of this database, and the channel is in it
    assert dump.count(crypto.PREFIX.encode()) >= 4  # the two secrets and the two channels' credentials

    async with running_app(settings, analyser) as client:  # read back from what is stored: both secrets verify
        assert await webhook_status(client, second, "c-new-secret") == 202
        assert await webhook_status(client, first, "c-old-secret") == 202
        factory = client.app.state.services.session_factory  # type: ignore[attr-defined]
        async with factory() as session:
            mail = channels.config_of(await channels.get_channel(session, "mail"))
            slack = channels.config_of(await channels.get_channel(session, "slack"))
        assert mail.password == SMTP_PASSWORD
        assert slack.url == SLACK_URL


async def test_rotating_the_key_keeps_every_secret_readable_with_the_new_key_alone(
    database_url: str, analyser: BatchingAnalyser, caplog: pytest.LogCaptureFixture
) -> None:
    key_a, key_b = crypto.generate_key(), crypto.generate_key()
    async with running_app(make_settings(database_url, encryption_keys=key_a), analyser) as client:
        secret = await create_source(client)
        await add_channels(client)
    before = await stored_values(database_url)
    assert len(before) == 3

    result = await asyncio.to_thread(
        run_cli, "rotate-encryption-key", database_url=database_url, keys=f"{key_b},{key_a}"
    )
    assert result.returncode == 0, result.stderr
    assert "re-encrypted 3 secrets" in result.stdout

    after = await stored_values(database_url)
    assert after.keys() == before.keys()
    for name, stored in after.items():
        assert stored != before[name]
        token = stored.removeprefix(crypto.PREFIX).encode()
        assert stored.startswith(crypto.PREFIX)
        assert Fernet(key_b).decrypt(token).decode() == crypto.Keyring.from_keys([key_a]).decrypt(before[name])
        with pytest.raises(InvalidToken):
            Fernet(key_a).decrypt(token)
    assert Fernet(key_b).decrypt(after["source:intranet:secret"].removeprefix(crypto.PREFIX)).decode() == secret

    async with running_app(make_settings(database_url, encryption_keys=key_b), analyser) as client:
        assert await webhook_status(client, secret, "c-after-rotation") == 202

    caplog.clear()
    async with running_app(make_settings(database_url, encryption_keys=key_a), analyser) as client:
        response = await post_event(client, secret, comment_payload("c-old-key"))
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    errors = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], crypto.EncryptionKeyError)]
    assert errors, "the old key alone fails with EncryptionKeyError"
    assert "cannot be decrypted with any configured key" in str(errors[0].exc_info[1])  # type: ignore[index]


async def test_rotation_refuses_and_changes_nothing_when_a_stored_secret_opens_with_no_configured_key(
    database_url: str, analyser: BatchingAnalyser
) -> None:
    async with running_app(make_settings(database_url), analyser) as client:
        await create_source(client)
        await add_channels(client)
    before = await stored_values(database_url)

    unrelated = crypto.generate_key()
    result = await asyncio.to_thread(run_cli, "rotate-encryption-key", database_url=database_url, keys=unrelated)

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "nothing was changed" in lines[0]
    assert "cannot be decrypted with any configured key" in lines[0]
    assert await stored_values(database_url) == before


@pytest.mark.parametrize("how", ["switchboard migrate", "app start"])
async def test_an_older_database_with_plaintext_secrets_is_encrypted_in_place(
    database_url: str, analyser: BatchingAnalyser, how: str
) -> None:
    settings = make_settings(database_url)
    async with running_app(settings, analyser) as client:
        await create_source(client)
        rotated = await client.post("/v1/admin/sources/intranet/rotate-secret", headers=ADMIN)
        assert rotated.status_code == 200, rotated.text  # the previous secret stays valid for a day
        await add_channels(client)
    secret, previous = generate_secret(), generate_secret()
    slack_credentials = json.dumps({"url": SLACK_URL})
    engine = create_engine(database_url)
    async with engine.begin() as connection:  # as an older version stored them: plaintext
        await connection.execute(
            sa.text("UPDATE source SET secret = :secret, previous_secret = :previous WHERE slug = 'intranet'"),
            {"secret": secret, "previous": previous},
        )
        await connection.execute(
            sa.text("UPDATE channel SET credentials = :credentials WHERE id = 'slack'"),
            {"credentials": slack_credentials},
        )
    await engine.dispose()
    assert (await stored_values(database_url))["source:intranet:secret"] == secret
    assert (await stored_values(database_url))["channel:slack:credentials"] == slack_credentials

    if how == "switchboard migrate":
        result = await asyncio.to_thread(run_cli, "migrate", database_url=database_url, keys=TEST_ENCRYPTION_KEY)
        assert result.returncode == 0, result.stderr
    else:
        async with running_app(settings, analyser):
            pass

    stored = await stored_values(database_url)
    assert all(value.startswith(crypto.PREFIX) for value in stored.values()), stored
    assert secret not in str(stored)
    assert SLACK_TOKEN not in str(stored)
    async with running_app(settings, analyser) as client:
        assert await webhook_status(client, secret, "c-migrated") == 202
        assert await webhook_status(client, previous, "c-migrated-previous") == 202
        factory = client.app.state.services.session_factory  # type: ignore[attr-defined]
        async with factory() as session:
            slack = (await session.execute(sa.select(Channel).where(col(Channel.id) == "slack"))).scalar_one()
        assert slack.credentials == slack_credentials


async def test_postgresql_without_a_configured_key_refuses_to_start(
    postgres_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SWITCHBOARD_ENCRYPTION_KEYS", raising=False)
    settings = make_settings(postgres_database, encryption_keys=None)

    with pytest.raises(crypto.EncryptionKeyError, match="SWITCHBOARD_ENCRYPTION_KEYS must be set with PostgreSQL"):
        async with running_app(settings, None):
            pass

    result = await asyncio.to_thread(run_cli, "rotate-encryption-key", database_url=postgres_database, keys=None)
    assert result.returncode == 1
    assert "SWITCHBOARD_ENCRYPTION_KEYS must be set" in result.stderr


async def test_sqlite_without_a_configured_key_generates_one_beside_the_database_and_reuses_it(
    sqlite_url: str, analyser: BatchingAnalyser, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("SWITCHBOARD_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("SWITCHBOARD_ENCRYPTION_KEY_FILE", raising=False)
    settings = make_settings(sqlite_url, encryption_keys=None)
    key_file = Path(str(make_url(sqlite_url).database)).parent / "encryption.keys"
    assert not key_file.exists()

    with caplog.at_level(logging.WARNING, logger="service.crypto"):
        async with running_app(settings, analyser) as client:
            secret = await create_source(client)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    Fernet(key.encode())  # a valid key
    warnings = [r.getMessage() for r in caplog.records if r.name == "service.crypto"]
    assert len(warnings) == 1
    assert str(key_file) in warnings[0]
    stored = (await stored_values(sqlite_url))["source:intranet:secret"]
    assert Fernet(key.encode()).decrypt(stored.removeprefix(crypto.PREFIX)).decode() == secret

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="service.crypto"):
        async with running_app(settings, analyser) as client:
            assert await webhook_status(client, secret, "c-second-start") == 202
    assert key_file.read_text().strip() == key
    assert not [r for r in caplog.records if r.name == "service.crypto"]


def test_generate_encryption_key_prints_a_new_valid_key(tmp_path: Path) -> None:
    printed = [
        run_cli("generate-encryption-key", database_url=f"sqlite:///{tmp_path}/unused.db", keys=None) for _ in range(2)
    ]
    assert [p.returncode for p in printed] == [0, 0]
    keys = [p.stdout.strip() for p in printed]
    assert keys[0] != keys[1]
    fernet = Fernet(keys[0].encode())
    assert fernet.decrypt(fernet.encrypt(b"round trip")) == b"round trip"
    assert crypto.Keyring.from_keys(keys).key_count == 2
    assert not (tmp_path / "unused.db").exists()  # generating a key touches no database


@pytest.mark.parametrize("command", ["generate-encryption-key", "rotate-encryption-key"])
def test_encryption_key_commands_have_help(command: str, tmp_path: Path) -> None:
    result = run_cli(command, "--help", database_url=f"sqlite:///{tmp_path}/unused.db", keys=None)
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()
