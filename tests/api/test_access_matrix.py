"""Deny by default, proved from the OpenAPI document: every route x method x caller gives the expected answer,
and every write body rejects unknown or read-only fields without changing anything."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import sqlalchemy as sa
from sqlmodel import SQLModel

from tests.factories import ADMIN, create_member, create_source, responder_headers

METHODS = ("get", "post", "put", "patch", "delete")
PUBLIC = {"/healthz", "/readyz"}
# Routes a responder key may call (everything else under /v1 needs an admin key, except the platform's webhooks).
RESPONDER_ROUTES = re.compile(
    r"^/v1/(queue(/.*)?|classify|comments/\{comment_id\}/labels|me/notification-preferences|analytics(/.*)?)$"
)
WEBHOOKS = re.compile(r"^/v1/webhooks/")


def operations(client: httpx.AsyncClient) -> list[tuple[str, str]]:
    """Every (method, path) of the app's OpenAPI document."""
    schema = client.app.openapi()  # type: ignore[attr-defined]
    return [(method, path) for path, item in schema["paths"].items() for method in METHODS if method in item]


def concrete(path: str) -> str:
    """The path with its parameters filled in (ids that do not exist)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in ("version",):
            return "99"
        if name.endswith("_id") and name not in ("member_id", "team_id"):
            return str(uuid.uuid4()) if name not in ("topic_id", "key_id", "job_id") else "999999"
        return "nothing-here"

    return re.sub(r"\{([^}]+)\}", value, path)


def expected(role: str, method: str, path: str) -> set[int] | str:
    """The exact status for denials, or 'allowed' (anything but 401/403/5xx) for permitted callers."""
    if path in PUBLIC:
        return "allowed"
    if WEBHOOKS.match(path):
        # A platform is known by its signature, not by a key: an unsigned request is refused for everyone.
        return {401, 404}
    if role in ("none", "platform"):
        return {401}
    if role == "responder":
        return (
            "allowed"
            if RESPONDER_ROUTES.match(path) and not (method == "get" and path == "/v1/comments/{comment_id}")
            else {403}
        )
    return "allowed"


async def test_every_route_and_method_answers_each_caller_as_expected(client: httpx.AsyncClient) -> None:
    secret = await create_source(client)
    await create_member(client, "r1")
    callers = {
        "none": {},
        "platform": {"Authorization": f"Bearer {secret}"},
        "responder": await responder_headers(client, "r1"),
        "admin": ADMIN,
    }
    ops = operations(client)
    assert len(ops) > 40
    deviations = []
    for method, path in ops:
        for role, headers in callers.items():
            body: dict[str, Any] | None = {} if method in ("post", "put", "patch") else None
            response = await client.request(method.upper(), concrete(path), json=body, headers=headers)
            want = expected(role, method, path)
            if want == "allowed":
                ok = response.status_code not in (401, 403) and response.status_code < 500
            else:
                ok = response.status_code in want
            if not ok:
                deviations.append((role, method.upper(), path, response.status_code, want))
    assert deviations == []


def write_bodies(client: httpx.AsyncClient) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, the schema of the JSON body) of every operation that takes one."""
    schema = client.app.openapi()  # type: ignore[attr-defined]
    found = []
    for path, item in schema["paths"].items():
        for method in METHODS:
            body = item.get(method, {}).get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                found.append((method, path, body["schema"]))
    return found


def test_every_write_body_schema_forbids_unknown_fields(client: httpx.AsyncClient) -> None:
    components = client.app.openapi()["components"]["schemas"]  # type: ignore[attr-defined]
    open_objects = []
    for method, path, body in write_bodies(client):
        seen: set[str] = set()
        stack: list[Any] = [body]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if "$ref" in node:
                    name = node["$ref"].rsplit("/", 1)[1]
                    if name not in seen:
                        seen.add(name)
                        stack.append(components[name])
                    continue
                if (
                    node.get("type") == "object"
                    and "properties" in node
                    and node.get("additionalProperties") is not False
                ):
                    open_objects.append((method, path, node.get("title")))
                stack.extend(v for v in node.values() if isinstance(v, dict | list))
            elif isinstance(node, list):
                stack.extend(node)
    assert open_objects == []


async def _row_counts(client: httpx.AsyncClient) -> dict[str, int]:
    factory = client.app.state.services.session_factory  # type: ignore[attr-defined]
    async with factory() as session:
        return {
            name: (await session.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
            for name, table in SQLModel.metadata.tables.items()
        }


async def test_unknown_or_read_only_fields_in_any_write_body_are_rejected_and_change_nothing(
    client: httpx.AsyncClient,
) -> None:
    await create_source(client)
    before = await _row_counts(client)
    accepted = []
    for method, path, _ in write_bodies(client):
        if WEBHOOKS.match(path):
            continue  # signed platform payloads: covered by the webhook tests (strict payload models)
        for field in ("unexpected_field", "created_at", "updated_at", "deleted_at", "key_hash"):
            response = await client.request(
                method.upper(), concrete(path).replace("nothing-here", "intranet"), json={field: "x"}, headers=ADMIN
            )
            errors = (response.json().get("errors") or []) if response.status_code == 422 else []
            extra = [e for e in errors if e["type"] == "extra_forbidden" and e["loc"][-1] == field]
            if response.status_code != 422 or not extra:
                accepted.append((method.upper(), path, field, response.status_code))
    assert accepted == []
    assert await _row_counts(client) == before
