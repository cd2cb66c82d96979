"""The API documentation renders in a real browser from this server alone.

Debian's Chromium loads /docs from a real uvicorn server on loopback and runs Swagger UI; the test reads the DOM
the page built. The machine has no route to a CDN, so the operations only appear if every script and style came
from Switchboard itself. Without Chromium the test is skipped with the reason (a failure when CI requires it).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from service.settings import Settings
from switchboard.app import create_app
from tests.conftest import unavailable
from tests.processes import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def docs_server(tmp_path: Path) -> Iterator[str]:
    """A real uvicorn server with the app; no lifespan, as /docs and /openapi.json need no database or model."""
    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield base_url
    finally:
        server.should_exit = True
        thread.join(10)


def test_api_docs_render_in_a_browser_without_internet(docs_server: str, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        unavailable("Chromium (Debian package chromium)", "not installed")
    assert chromium is not None
    assert httpx.get(f"{docs_server}/docs").status_code == 200
    dom = subprocess.run(  # noqa: S603  (a fixed browser command line against our own server)
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            f"{docs_server}/docs",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert 'class="swagger-ui"' in dom  # Swagger UI's script ran and built its root
    assert "/v1/webhooks/{slug}" in dom  # ... and rendered the operations of our OpenAPI document
    assert "/v1/queue/claim-next" in dom
    assert "Unable to render this definition" not in dom
