"""Secrets at rest: credentials and signing secrets are stored encrypted (Fernet: AES-128-CBC + HMAC-SHA256).

Keys come from `SWITCHBOARD_ENCRYPTION_KEYS` (comma-separated Fernet keys: the first encrypts, every one decrypts,
so a new key goes first and the old ones stay until `switchboard rotate-encryption-key` has re-encrypted everything).
The embedded default (SQLite) with no key configured generates one into `var/encryption.keys` (mode 0600) on
first start and logs that it did; a PostgreSQL deployment refuses to start without a configured key, because a
key generated on one replica's disk would leave every other replica unable to read what it wrote.

Columns of type `EncryptedText` are encrypted and decrypted by SQLAlchemy as they are written and read, with the
process's keyring (`install`, called by every entry point: the app's lifespan, the worker, the CLI). A stored value
is `enc:v1:<Fernet token>`; a value without that prefix is a plaintext left by an older version, readable as it is
and encrypted in place by `switchboard migrate` (`encrypt_all`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from service.settings import Settings

log = logging.getLogger(__name__)

PREFIX: Final = "enc:v1:"
KEY_FILE_NAME: Final = "encryption.keys"


class EncryptionKeyError(RuntimeError):
    """The keys are missing, malformed, or cannot decrypt a stored value."""


@dataclass(frozen=True, slots=True)
class Keyring:
    """The configured keys: the first encrypts, all decrypt."""

    fernet: MultiFernet
    key_count: int

    @classmethod
    def from_keys(cls, keys: list[str]) -> Keyring:
        """A keyring over Fernet keys (url-safe base64 of 32 bytes), newest first."""
        if not keys:
            raise EncryptionKeyError("No encryption key given.")
        try:
            fernets = [Fernet(k.strip().encode()) for k in keys]
        except (ValueError, TypeError) as exc:
            raise EncryptionKeyError(
                "An encryption key is not a Fernet key (32 url-safe base64-encoded bytes; make one with "
                "`switchboard generate-encryption-key`)."
            ) from exc
        return cls(MultiFernet(fernets), len(fernets))

    def encrypt(self, value: str) -> str:
        """The stored form of a plaintext, under the newest key."""
        return PREFIX + self.fernet.encrypt(value.encode()).decode()

    def decrypt(self, stored: str) -> str:
        """The plaintext of a stored value (a value without the prefix is a legacy plaintext)."""
        if not stored.startswith(PREFIX):
            return stored
        try:
            return self.fernet.decrypt(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise EncryptionKeyError(
                "A stored secret cannot be decrypted with any configured key: was a key removed from "
                "SWITCHBOARD_ENCRYPTION_KEYS before `switchboard rotate-encryption-key` ran?"
            ) from None

    def reencrypt(self, stored: str) -> str:
        """The stored value under the newest key (plaintexts are encrypted)."""
        if not stored.startswith(PREFIX):
            return self.encrypt(stored)
        try:
            return PREFIX + self.fernet.rotate(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise EncryptionKeyError("A stored secret cannot be decrypted with any configured key.") from None


def generate_key() -> str:
    """A new Fernet key."""
    return Fernet.generate_key().decode()


_installed: Keyring | None = None


def install(keyring: Keyring) -> None:
    """Make `keyring` the one this process encrypts and decrypts with."""
    global _installed
    _installed = keyring


def current() -> Keyring:
    """The process's keyring (an entry point must have installed it)."""
    if _installed is None:
        raise EncryptionKeyError("No encryption keyring is installed in this process (crypto.install).")
    return _installed


def key_file(settings: Settings) -> Path:
    """Where the embedded deployment keeps its generated key: the configured file, else beside the SQLite file."""
    if settings.encryption_key_file is not None:
        return settings.encryption_key_file
    database = make_url(settings.database_url).database
    if database and database != ":memory:":
        return Path(database).parent / KEY_FILE_NAME
    return Path("var") / KEY_FILE_NAME


def load(settings: Settings) -> Keyring:
    """The keyring this deployment uses: configured keys, else (SQLite only) the generated key file."""
    if settings.encryption_keys is not None:
        keys = [k for k in settings.encryption_keys.get_secret_value().split(",") if k.strip()]
        return Keyring.from_keys(keys)
    if not settings.is_sqlite:
        raise EncryptionKeyError(
            "SWITCHBOARD_ENCRYPTION_KEYS must be set with PostgreSQL: every process (API replicas, workers) needs "
            "the same key. Make one with `switchboard generate-encryption-key`."
        )
    path = key_file(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process of this deployment made it first
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(generate_key() + "\n")
            log.warning(
                "generated an encryption key for secrets at rest in %s (mode 0600); back it up with the database, "
                "or set SWITCHBOARD_ENCRYPTION_KEYS",
                path,
            )
    keys = [line.strip() for line in path.read_text().replace(",", "\n").splitlines() if line.strip()]
    return Keyring.from_keys(keys)


class EncryptedText(sa.types.TypeDecorator[str]):
    """A text column stored encrypted with the process's keyring; reads give the plaintext."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:  # noqa: ARG002
        """Encrypt on the way in."""
        return None if value is None else current().encrypt(value)

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:  # noqa: ARG002
        """Decrypt on the way out."""
        return None if value is None else current().decrypt(value)


def encrypted_columns(metadata: sa.MetaData) -> Iterator[tuple[sa.Table, sa.Column[Any]]]:
    """Every column of type EncryptedText in the schema (`service.tables` registers them all)."""
    for table in metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, EncryptedText):
                yield table, column


async def encrypt_all(engine: AsyncEngine, keyring: Keyring, metadata: sa.MetaData, *, rotate: bool = False) -> int:
    """Encrypt every plaintext secret in place (and, with `rotate`, re-encrypt the rest under the newest key).

    Reads and writes the raw stored strings, so the type's own encryption is bypassed. Returns how many values
    changed. One transaction: a failure (e.g. a token no configured key opens) changes nothing.
    """
    changed = 0
    async with engine.begin() as connection:
        for table, column in encrypted_columns(metadata):
            raw = sa.type_coerce(column, sa.Text)
            primary = list(table.primary_key.columns)
            rows = (await connection.execute(sa.select(*primary, raw.label("v")).where(column.isnot(None)))).all()
            for row in rows:
                stored: str = row.v
                if stored.startswith(PREFIX) and not rotate:
                    continue
                new = keyring.reencrypt(stored)
                where = sa.and_(*(c == row[i] for i, c in enumerate(primary)))
                await connection.execute(
                    sa.update(table).where(where).values({column.name: sa.type_coerce(new, sa.Text)})
                )
                changed += 1
    return changed
