"""The routing rules admin API: versions, validation at save, references checked against the directory."""

from __future__ import annotations

import httpx
import sqlalchemy as sa
from sqlmodel import col

from service.audit.tables import AuditEvent
from service.database import transaction
from tests.factories import ADMIN, create_member, create_source, put_rules, responder_headers

DEFAULT = {"id": "default", "name": "Default", "then": {"priority": "low"}}


async def test_before_any_save_the_live_rules_are_the_built_in_default(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/admin/rules", headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == 0
    assert [r["id"] for r in body["rules"]] == ["default"]
    assert body["rules"][0]["when"] is None


async def test_each_save_is_a_new_version_and_old_versions_stay_readable(client: httpx.AsyncClient) -> None:
    await create_source(client)
    await create_member(client, "r1")
    pay = {
        "id": "pay",
        "name": "Pay",
        "when": {"field": "topic", "op": "eq", "value": "pay"},
        "then": {"assign": {"to": "member", "member": "r1"}, "sla": "PT2H"},
    }
    first = await put_rules(client, [pay])
    second = await put_rules(client, [DEFAULT])
    assert (first["version"], second["version"]) == (1, 2)
    assert [r["id"] for r in (await client.get("/v1/admin/rules", headers=ADMIN)).json()["rules"]] == ["default"]
    old = (await client.get("/v1/admin/rules/versions/1", headers=ADMIN)).json()
    assert [r["id"] for r in old["rules"]] == ["pay", "default"]
    assert old["rules"][0]["then"]["sla"] == "PT2H"
    missing = await client.get("/v1/admin/rules/versions/9", headers=ADMIN)
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")

    factory = client.app.state.services.session_factory  # type: ignore[attr-defined]
    async with transaction(factory) as session:
        events = (
            (await session.execute(sa.select(AuditEvent).where(col(AuditEvent.action) == "rules.replaced")))
            .scalars()
            .all()
        )
    assert [(e.before or {}).get("version") for e in events] == [0, 1]
    assert [(e.after or {}).get("version") for e in events] == [1, 2]


async def test_a_regular_expression_re2_cannot_run_is_rejected_at_save_with_the_reason(
    client: httpx.AsyncClient,
) -> None:
    rules = [{"id": "echo", "name": "Repeated word", "when": {"field": "text", "op": "regex", "value": r"(\w+) \1"},
              "then": {}}, DEFAULT]  # fmt: skip
    response = await client.put("/v1/admin/rules", json={"rules": rules}, headers=ADMIN)
    assert response.status_code == 422
    assert "RE2" in response.text
    assert "echo" in response.text
    assert (await client.get("/v1/admin/rules", headers=ADMIN)).json()["version"] == 0


async def test_rules_must_end_with_the_default_and_name_existing_owners(client: httpx.AsyncClient) -> None:
    no_default = [{"id": "x", "name": "X", "when": {"field": "needs_answer", "op": "is", "value": True}, "then": {}}]
    response = await client.put("/v1/admin/rules", json={"rules": no_default}, headers=ADMIN)
    assert response.status_code == 422
    assert "the last rule must be the default" in response.text
    unknown = [{"id": "d", "name": "D", "then": {"assign": {"to": "team", "team": "ghosts"}}}]
    response = await client.put("/v1/admin/rules", json={"rules": unknown}, headers=ADMIN)
    assert (response.status_code, response.json()["code"]) == (422, "invalid_payload")
    assert "team 'ghosts'" in response.json()["detail"]
    extra = await client.put("/v1/admin/rules", json={"rules": [DEFAULT], "version": 7}, headers=ADMIN)
    assert extra.status_code == 422


async def test_responders_cannot_read_or_change_the_rules(client: httpx.AsyncClient) -> None:
    await create_member(client, "r1")
    key = await responder_headers(client, "r1")
    assert (await client.get("/v1/admin/rules", headers=key)).status_code == 403
    assert (await client.put("/v1/admin/rules", json={"rules": [DEFAULT]}, headers=key)).status_code == 403
    assert (await client.get("/v1/admin/rules")).status_code == 401
