"""The API does what its OpenAPI document says: bounded ids, one cursor error, declared statuses, strict types."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from tests.factories import (
    ADMIN,
    comment_payload,
    create_member,
    create_source,
    create_team,
    post_event,
    put_rules,
    responder_headers,
)

INT32_MAX = 2**31 - 1
ID_PATHS = [
    ("GET", "/v1/admin/topics/{}"),
    ("PATCH", "/v1/admin/topics/{}"),
    ("DELETE", "/v1/admin/topics/{}"),
    ("GET", "/v1/admin/api-keys/{}"),
    ("POST", "/v1/admin/api-keys/{}/revoke"),
    ("POST", "/v1/admin/api-keys/{}/rotate"),
    ("GET", "/v1/admin/rules/versions/{}"),
]


def _operation(client: httpx.AsyncClient, method: str, path: str) -> dict[str, Any]:
    document: dict[str, Any] = client.app.openapi()  # type: ignore[attr-defined]
    operation: dict[str, Any] = document["paths"][path][method.lower()]
    return operation


async def test_ids_outside_their_column_are_422_and_the_document_says_so(client: httpx.AsyncClient) -> None:
    for method, template in ID_PATHS:
        json_body: dict[str, Any] | None = {} if method == "PATCH" else None
        for bad in (0, -3031283662744, INT32_MAX + 1, 2**63, 4611686018427387903, 10**40):
            response = await client.request(method, template.format(bad), json=json_body, headers=ADMIN)
            assert (response.status_code, response.json()["code"]) == (422, "validation_error"), (method, bad)
        largest = await client.request(method, template.format(INT32_MAX), json=json_body, headers=ADMIN)
        assert largest.status_code == 404, (method, template, largest.text)
        (parameter,) = _operation(client, method, template.format("{" + _name(template) + "}"))["parameters"]
        assert (parameter["schema"]["minimum"], parameter["schema"]["maximum"]) == (1, INT32_MAX)


def _name(template: str) -> str:
    return {"topics": "topic_id", "api-keys": "key_id", "rules": "version"}[template.split("/")[3]]


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


BAD_CURSORS = [
    "not-a-cursor",
    "!!",
    "²",  # a digit to str.isdigit(), not to int()
    "12",
    _cursor([2**40]),
    _cursor([1, 2**40, "2026-11-21T10:00:00+00:00", "7b4c9a3e-8d0f-4a51-9a51-3f0c7c1e2b6d"]),
    _cursor(["2026-11-21T10:00:00", "7b4c9a3e-8d0f-4a51-9a51-3f0c7c1e2b6d"]),  # no time zone
    _cursor(None),
    base64.urlsafe_b64encode(b"[" * 3000).decode(),  # deeper than any parser should follow
]


async def test_a_cursor_this_api_did_not_return_is_422_invalid_cursor_on_every_list(
    client: httpx.AsyncClient,
) -> None:
    await create_source(client)
    await create_member(client, "r1")
    lists = [
        ("/v1/admin/audit", ADMIN),
        ("/v1/admin/jobs", ADMIN),
        ("/v1/queue", await responder_headers(client, "r1")),
    ]
    for path, headers in lists:
        for cursor in BAD_CURSORS:
            response = await client.get(path, params={"cursor": cursor}, headers=headers)
            assert (response.status_code, response.json()["code"]) == (422, "invalid_cursor"), (path, cursor)
        responses = _operation(client, "GET", path)["responses"]
        assert "422" in responses
        assert "400" not in responses


async def test_statuses_that_classify_put_rules_and_delete_team_answer_are_declared(
    client: httpx.AsyncClient,
) -> None:
    await create_member(client, "r1")
    await create_team(client, "it", ["r1"])
    await put_rules(client, [{"id": "all", "name": "All to IT", "then": {"assign": {"to": "team", "team": "it"}}}])
    answers = [
        ("POST", "/v1/classify", {"texts": ["Is the canteen open?"], "source": "nowhere"}, 404),
        ("PUT", "/v1/admin/rules", {"rules": [{"id": "d", "name": "D", "then": {}}],
                                    "simulation_id": "7b4c9a3e-8d0f-4a51-9a51-3f0c7c1e2b6d"}, 404),
        ("DELETE", "/v1/admin/teams/it", None, 409),
    ]  # fmt: skip
    for method, path, body, status in answers:
        response = await client.request(method, path, json=body, headers=ADMIN)
        assert response.status_code == status, (path, response.text)
        template = "/v1/admin/teams/{team_id}" if path.startswith("/v1/admin/teams/") else path
        assert str(status) in _operation(client, method, template)["responses"], (method, path)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/admin/rules/simulate", {"thresholds": {"offensive": False}}),
        ("POST", "/v1/admin/rules/simulate", {"thresholds": {"offensive": "0.5"}}),
        ("POST", "/v1/admin/rules/simulate", {"thresholds": {"offensive": 0.5}, "window": {"last": True}}),
        ("POST", "/v1/admin/rules/reroute", {"window": {"last": "10"}}),
        ("PATCH", "/v1/admin/sources/intranet", {"active": "yes"}),
        ("PATCH", "/v1/admin/sources/intranet", {"active": 0}),
        ("PATCH", "/v1/admin/sources/intranet", {"thresholds": {"offensive": True}}),
        ("POST", "/v1/admin/members", {"id": "r2", "name": "R2", "capacity": "5"}),
        ("POST", "/v1/admin/members", {"id": "r2", "name": "R2", "capacity": 5.0}),
        ("PUT", "/v1/admin/rules", {"rules": [{"id": "d", "name": "D", "then": {"hold": "true"}}]}),
        ("PUT", "/v1/admin/rules", {"rules": [{"id": "d", "name": "D", "enabled": 1, "then": {}}]}),
        ("PUT", "/v1/admin/rules", {"rules": [{"id": "d", "name": "D", "then": {"no_reply": "no"}}]}),
        ("PUT", "/v1/admin/rules", {"rules": [
            {"id": "s", "name": "S", "when": {"field": "score", "score": "offensive.offensive", "op": ">",
                                              "value": True}, "then": {}},
            {"id": "d", "name": "D", "then": {}}]}),
        ("POST", "/v1/admin/rules/explain", {"text": "Hello?", "is_reply": "false"}),
        ("POST", "/v1/admin/api-keys/1/rotate", {"grace_seconds": True}),
    ],
)  # fmt: skip
async def test_a_boolean_or_number_in_the_wrong_type_is_refused_not_coerced(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any]
) -> None:
    await create_source(client)
    response = await client.request(method, path, json=body, headers=ADMIN)
    assert (response.status_code, response.json()["code"]) == (422, "validation_error"), response.text


async def test_a_flag_correction_must_be_true_or_false(client: httpx.AsyncClient) -> None:
    secret = await create_source(client)
    posted = await post_event(client, secret, comment_payload())
    assert posted.status_code == 202, posted.text
    response = await client.post(
        f"/v1/comments/{posted.json()['id']}/labels", json={"flags": {"offensive": 0}}, headers=ADMIN
    )
    assert (response.status_code, response.json()["code"]) == (422, "validation_error"), response.text


async def test_numbers_and_booleans_of_the_right_type_are_still_accepted(client: httpx.AsyncClient) -> None:
    await create_source(client)
    source = await client.patch(
        "/v1/admin/sources/intranet", json={"active": False, "thresholds": {"offensive": 1}}, headers=ADMIN
    )
    assert source.status_code == 200, source.text
    assert (source.json()["active"], source.json()["thresholds"]["offensive"]) == (False, 1.0)
    member = await client.post("/v1/admin/members", json={"id": "r2", "name": "R2", "capacity": 5}, headers=ADMIN)
    assert (member.status_code, member.json()["capacity"]) == (201, 5)
    simulation = await client.post(
        "/v1/admin/rules/simulate", json={"thresholds": {"offensive": 0}, "window": {"last": 10}}, headers=ADMIN
    )
    assert simulation.status_code in (201, 202), simulation.text
