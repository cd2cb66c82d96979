"""Health probes, problem+json for unknown routes, and the OpenAPI document kept in step with the app."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from service.settings import Settings
from switchboard.app import create_app

OPENAPI_FILE = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok", "checks": {}}
    await client.app.state.services.classifiers.warmed_up()  # type: ignore[attr-defined]
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"classifier": "ok", "database": "ok", "queue": "ok"}


async def test_readiness_fails_when_the_job_consumer_is_down(client: httpx.AsyncClient) -> None:
    await client.app.state.services.backend.close()  # type: ignore[attr-defined]
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["code"] == "not_ready"
    assert ready.json()["checks"]["database"] == "ok"


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/nothing-here")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert missing.headers["content-type"] == "application/problem+json"
    wrong = await client.delete("/healthz")
    assert (wrong.status_code, wrong.json()["code"]) == (405, "method_not_allowed")


def test_openapi_document_is_in_step_with_the_app() -> None:
    current = create_app(Settings()).openapi()
    committed = json.loads(OPENAPI_FILE.read_text())
    assert current == committed, "openapi/openapi.json is stale: run `switchboard openapi`"


def test_every_operation_has_a_stable_id_and_declares_problems() -> None:
    document = create_app(Settings()).openapi()
    ids = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            ids.append(operation["operationId"])
            assert "_" in operation["operationId"] or operation["operationId"].isalpha(), (path, method)
            errors = [code for code in operation["responses"] if code.startswith(("4", "5"))]
            for code in errors:
                assert list(operation["responses"][code]["content"]) == ["application/problem+json"], (path, code)
    assert len(ids) == len(set(ids))
    assert "Problem" in document["components"]["schemas"]
