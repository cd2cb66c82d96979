"""The edge: no input crashes the service; every bad one gets problem+json naming what is wrong, nothing written.

Through HTTP, on SQLite and PostgreSQL: headers, bodies, paths and query parameters that once crashed the service or
answered the wrong status.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from routers.edge import CheckedRoute
from service.models import Comment, Delivery, Job
from tests.api.test_webhooks import count_rows
from tests.factories import ADMIN, comment_payload, create_source, encode, post_event, signed_headers

NOTHING = {"comment": 0, "job": 0, "delivery": 0}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is RFC 9457 problem+json with this status and stable code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert (problem["status"], problem["code"]) == (status, code)
    assert problem["type"] == f"urn:switchboard:problem:{code}"
    assert problem["request_id"] == response.headers["x-request-id"]
    return problem


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("webhook-timestamp", "9" * 400),
        ("webhook-timestamp", "-1"),
        ("webhook-timestamp", "1e9"),
        ("webhook-timestamp", "¹²³".encode("latin-1")),  # superscripts: str.isdigit() says yes
        ("webhook-id", "msg\x7fdel"),
        ("webhook-id", "x" * 201),
        ("webhook-signature", "v1,not base64!"),
        ("webhook-signature", "v2," + "A" * 44),
    ],
)
async def test_malformed_signature_header_is_401_with_nothing_written(
    client: httpx.AsyncClient, header: str, value: str | bytes
) -> None:
    secret = await create_source(client)
    body = encode(comment_payload())
    headers = {k.encode(): v.encode() for k, v in signed_headers(secret, body).items()}
    headers[header.encode()] = value if isinstance(value, bytes) else value.encode()
    response = await client.post("/v1/webhooks/intranet", content=body, headers=headers)
    assert_problem(response, 401, "invalid_signature")
    assert await count_rows(client, Comment, Job, Delivery) == NOTHING


def _deep(depth: int) -> bytes:
    payload = comment_payload()
    text = json.dumps(payload)
    return text.replace('"body"', '"extra": ' + "[" * depth + "]" * depth + ', "body"', 1).encode()


def _with_created_at(value: str) -> bytes:
    payload = comment_payload()
    payload["data"]["created_at"] = value
    return encode(payload)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (_deep(5_000), []),
        (_deep(200), ["data", "extra"]),
        (encode(comment_payload()).replace(b'"c-1001"', b"1" + b"0" * 4_400), []),
        (encode(comment_payload()).replace(b'"c-1001"', b"9" * 20), []),
        (encode(comment_payload()).replace(b'"c-1001"', b"1e999"), []),
        (encode(comment_payload()).replace(b'"c-1001"', b"NaN"), []),
        (_with_created_at("0001-01-01T00:00:00+14:00"), ["data", "created_at"]),
        (_with_created_at("9999-12-31T23:59:59-14:00"), ["data", "created_at"]),
        (encode(comment_payload(body="nul \x00 here")), ["data", "body"]),
        (encode(comment_payload("c-\x00")), ["data", "id"]),
        (b'{"type": "comment.created", "data": {"id\\u0000": 1}}', ["data", "id\x00"]),
        (b"\xff\xfe not utf-8", []),
    ],
    ids=[
        "nested-5000",
        "nested-200",
        "int-4401-digits",
        "int-past-64-bits",
        "float-infinite",
        "nan",
        "created-underflows-utc",
        "created-overflows-utc",
        "nul-in-body",
        "nul-in-id",
        "nul-in-key",
        "not-utf8",
    ],
)
async def test_signed_body_that_cannot_be_parsed_or_stored_is_422_with_nothing_written(
    client: httpx.AsyncClient, body: bytes, loc: list[Any]
) -> None:
    secret = await create_source(client)
    response = await client.post("/v1/webhooks/intranet", content=body, headers=signed_headers(secret, body))
    problem = assert_problem(response, 422, "invalid_payload")
    if loc:  # the event's tag may come first: ["comment.created", "data", "created_at"]
        assert any(loc == e["loc"][i : i + len(loc)] for e in problem["errors"] for i in range(2)), problem
    assert await count_rows(client, Comment, Job, Delivery) == NOTHING


async def test_refused_delivery_can_be_sent_again_correctly(client: httpx.AsyncClient) -> None:
    secret = await create_source(client)
    bad = _with_created_at("0001-01-01T00:00:00+14:00")
    headers = signed_headers(secret, bad, webhook_id="msg_retry")
    assert (await client.post("/v1/webhooks/intranet", content=bad, headers=headers)).status_code == 422
    fixed = await post_event(client, secret, comment_payload(), webhook_id="msg_retry")
    assert fixed.status_code == 202  # the refused delivery left no trace that would make this a duplicate
    assert fixed.json()["status"] == "accepted"


async def test_timestamps_with_offsets_are_stored_in_utc(client: httpx.AsyncClient) -> None:
    secret = await create_source(client)
    body = _with_created_at("2026-11-21T23:30:00-14:00")
    response = await client.post("/v1/webhooks/intranet", content=body, headers=signed_headers(secret, body))
    assert response.status_code == 202, response.text
    shown = (await client.get(f"/v1/comments/{response.json()['id']}", headers=ADMIN)).json()
    assert shown["posted_at"].startswith("2026-11-22T13:30:00")


async def test_nul_in_a_path_is_422_before_anything_else(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/webhooks/a%00b", content=b"{}")  # no key, no signature, no such source
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"][0]["loc"] == ["path", "slug"]


async def test_nul_in_a_query_is_422_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/admin/audit", params={"action": "rule\x00s.put"}, headers=ADMIN)
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"][0]["loc"] == ["query", "action"]
    ignored = await client.get("/healthz", params={"unknown": "a\x00b"})  # as any undeclared parameter is
    assert ignored.status_code == 200


async def test_a_rule_named_with_nul_is_refused_and_processing_goes_on(client: httpx.AsyncClient) -> None:
    ruleset = {
        "rules": [
            {"id": "default", "name": "Every\x00thing", "then": {"assign": {"to": "team", "team": "nobody"}}},
        ]
    }
    response = await client.put("/v1/admin/rules", json=ruleset, headers=ADMIN)
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"][0]["loc"] == ["body", "rules", 0, "name"]


@pytest.mark.parametrize(
    "body",
    [b"[" * 5_000 + b"]" * 5_000, b'{"slug": "x", "name": ' + b"1" * 5_000 + b"}", b'{"slug": "x", "name": NaN}'],
    ids=["nested-5000", "int-5000-digits", "nan"],
)
async def test_unparseable_admin_body_is_422_not_400(client: httpx.AsyncClient, body: bytes) -> None:
    headers = {**ADMIN, "content-type": "application/json"}
    response = await client.post("/v1/admin/sources", content=body, headers=headers)
    assert_problem(response, 422, "validation_error")


async def test_wrong_method_is_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.delete("/v1/admin/sources", headers=ADMIN)
    assert_problem(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}


async def test_unforeseen_error_is_problem_json_with_a_request_id_in_the_log(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def explode() -> None:
        raise RuntimeError("secret internals: /srv/app.py line 3, password=hunter2")

    client.app.add_api_route("/test-only/explode", explode)  # type: ignore[attr-defined]
    with caplog.at_level(logging.ERROR, logger="routers.problems"):
        response = await client.get("/test-only/explode", headers={"X-Request-ID": "req-42"})
    problem = assert_problem(response, 500, "internal")
    assert problem["request_id"] == "req-42"
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    [record] = [r for r in caplog.records if "req-42" in r.getMessage()]
    assert record.exc_info is not None
    assert "hunter2" in str(record.exc_info[1])


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    mine = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert mine.headers["x-request-id"] == "abc-123"
    made_up = await client.get("/healthz", headers={"X-Request-ID": "not sane\t" * 30})
    assert re.fullmatch(r"[0-9a-f]{32}", made_up.headers["x-request-id"])


async def test_client_leaving_before_its_body_is_not_an_unhandled_error(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    await create_source(client)
    app = client.app  # type: ignore[attr-defined]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    stamp = str(int(time.time())).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/webhooks/intranet",
        "raw_path": b"/v1/webhooks/intranet",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"webhook-id", b"msg_1"), (b"webhook-timestamp", stamp), (b"webhook-signature", b"v1,x")],
        "client": ("127.0.0.1", 1),
        "server": ("switchboard.test", 80),
        "state": {},
    }
    with caplog.at_level(logging.WARNING):
        await app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["code"] == "client_disconnected"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert await count_rows(client, Delivery) == {"delivery": 0}


def test_every_route_passes_the_edge_checks() -> None:
    from routers.problems import _routes
    from switchboard.app import create_app

    routes = [r for r in _routes(create_app().routes) if isinstance(r, APIRoute)]
    assert len(routes) > 50
    assert all(isinstance(r, CheckedRoute) for r in routes)


async def test_get_on_a_post_only_path_is_405_not_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/queue/claim-next", headers=ADMIN)
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


async def test_api_docs_load_nothing_from_outside(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", page.text)
    assert urls
    assert all(u.startswith("/") for u in urls), urls
    for url in urls:
        asset = await client.get(url)
        assert asset.status_code == 200, url
    bundle = await client.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert len(bundle.content) > 500_000
    assert_problem(await client.get("/docs/assets/..%2Fsecrets"), 404, "not_found")
