"""Cold start of a real `switchboard serve`: when it listens, when it is ready, and how fast the first webhooks are
acknowledged, while a probe measures how long /healthz waits (a blocked event loop shows there).

    .venv/bin/python -m benchmarks.cold_start [--webhooks 4] [--postgres URL] [--compare DIR --compare-cli MODULE]

Each database gets a fresh migrated copy. Webhooks are sent as soon as the server listens (not when it is ready),
as a platform would after a restart. Prints one row per database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import sqlalchemy as sa

from tests.factories import ADMIN, ADMIN_KEY, comment_payload, signed_headers
from tests.processes import ROOT, free_port, stop


async def _admin(admin_url: str, statement: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    url = sa.make_url(admin_url)
    connection = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password, database=url.database
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _postgres_copy(admin_url: str) -> tuple[str, str]:
    name = f"switchboard_cold_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    return name, sa.make_url(admin_url).set(drivername="postgresql+asyncpg", database=name).render_as_string(False)


def _drop_postgres(admin_url: str, name: str) -> None:
    asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def measure(database_url: str, webhooks: int, work: Path, *, root: Path, cli_module: str) -> dict[str, float]:
    """One cold start on this database of the code in `root`; seconds from the process start."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "SWITCHBOARD_DATABASE_URL": database_url,
        "SWITCHBOARD_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
    }
    cli = [sys.executable, "-m", cli_module]
    subprocess.run([*cli, "migrate"], env=env, cwd=root, check=True, capture_output=True)  # noqa: S603
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with (work / "serve.log").open("ab") as log:
        server = subprocess.Popen(  # noqa: S603  (our own CLI)
            [*cli, "serve", "--port", str(port)], env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT
        )
    result: dict[str, float] = {}
    waits: list[float] = []
    probing = threading.Event()
    try:
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        result["listening"] = time.monotonic() - started

        def probe() -> None:
            while not probing.is_set():
                began = time.monotonic()
                httpx.get(f"{base}/healthz", timeout=120)
                waits.append(time.monotonic() - began)
                time.sleep(0.05)

        prober = threading.Thread(target=probe)
        prober.start()
        with httpx.Client(base_url=base, timeout=120) as client:
            secret = client.post("/v1/admin/sources", json={"slug": "cold", "name": "Cold"}, headers=ADMIN).json()
            acks = []
            for i in range(webhooks):
                body = json.dumps(comment_payload(f"c-{i}", body=f"Will the canteen open earlier? ({i})")).encode()
                began = time.monotonic()
                answer = client.post("/v1/webhooks/cold", content=body, headers=signed_headers(secret["secret"], body))
                assert answer.status_code == 202, answer.text
                acks.append(time.monotonic() - began)
            while client.get("/readyz").status_code != 200:
                time.sleep(0.1)
            result["ready"] = time.monotonic() - started
        probing.set()
        prober.join()
        result["first_ack"], result["second_ack"], result["worst_ack"] = acks[0], acks[1], max(acks)
        result["worst_healthz"] = max(waits)
    finally:
        probing.set()
        stop(server)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--webhooks", type=int, default=4)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--compare", type=Path, help="also measure the code checked out here (e.g. a git worktree of an older commit)"
    )
    parser.add_argument("--compare-cli", default="switchboard.cli", help="its CLI module (older code: service.cli)")
    args = parser.parse_args()
    codes = [("this", ROOT, "switchboard.cli")]
    if args.compare:
        codes.append((args.compare.name, args.compare.resolve(), args.compare_cli))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for code, root, cli in codes:
            sqlite_url = f"sqlite+aiosqlite:///{work / f'{code}.db'}"
            rows.append((code, "SQLite", measure(sqlite_url, args.webhooks, work, root=root, cli_module=cli)))
            name, url = _postgres_copy(args.postgres)
            try:
                rows.append((code, "PostgreSQL", measure(url, args.webhooks, work, root=root, cli_module=cli)))
            finally:
                _drop_postgres(args.postgres, name)
    print("| code | database | listening s | ready s | 1st ack s | 2nd ack s | worst ack s | worst /healthz s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for code, label, r in rows:
        print(
            f"| {code} | {label} | {r['listening']:.1f} | {r['ready']:.1f} | {r['first_ack']:.2f} "
            f"| {r['second_ack']:.2f} | {r['worst_ack']:.2f} | {r['worst_healthz']:.2f} |"
        )


if __name__ == "__main__":
    main()
