"""Admin API for the directory: members, their external ids and delegates, teams; and who may call it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col

from service.audit.tables import AuditEvent
from tests.factories import ADMIN, create_member, create_source, create_team, responder_headers

ROOT = Path(__file__).resolve().parents[2]

MEMBER_ROUTES = [
    ("POST", "/v1/admin/members"),
    ("GET", "/v1/admin/members"),
    ("GET", "/v1/admin/members/ann"),
    ("PATCH", "/v1/admin/members/ann"),
    ("DELETE", "/v1/admin/members/ann"),
]
TEAM_ROUTES = [
    ("POST", "/v1/admin/teams"),
    ("GET", "/v1/admin/teams"),
    ("GET", "/v1/admin/teams/hr"),
    ("PATCH", "/v1/admin/teams/hr"),
    ("DELETE", "/v1/admin/teams/hr"),
]
BODIES = {"POST": {"id": "zed", "name": "Zed"}, "PATCH": {"name": "Renamed"}}


async def audit_trail(client: httpx.AsyncClient, target_type: str, target_id: str) -> list[dict[str, Any]]:
    """The audit events about one target, oldest first."""
    factory = client.app.state.services.session_factory  # type: ignore[attr-defined]
    async with factory() as session:
        rows = await session.execute(
            sa.select(AuditEvent)
            .where(col(AuditEvent.target_type) == target_type, col(AuditEvent.target_id) == target_id)
            .order_by(col(AuditEvent.id))
        )
        return [e.model_dump(include={"action", "actor", "before", "after"}) for e in rows.scalars()]


async def audit_count(client: httpx.AsyncClient) -> int:
    factory = client.app.state.services.session_factory  # type: ignore[attr-defined]
    async with factory() as session:
        count: int = (await session.execute(sa.text("SELECT count(*) FROM audit_event"))).scalar_one()
        return count


async def get(client: httpx.AsyncClient, path: str) -> Any:
    response = await client.get(path, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


# ---- members ------------------------------------------------------------------------------------------------


async def test_member_can_be_created_listed_read_changed_and_deleted(client: httpx.AsyncClient) -> None:
    await create_source(client, "intranet")
    created = await create_member(
        client, "ann", external={"intranet": "u-7"}, email="ann@example.com", capacity=5, name="Ann Example"
    )
    assert created["external_ids"] == [{"source": "intranet", "id": "u-7"}]
    assert (created["name"], created["email"], created["capacity"], created["teams"]) == (
        "Ann Example", "ann@example.com", 5, [],
    )  # fmt: skip
    await create_member(client, "bob")
    assert [m["id"] for m in await get(client, "/v1/admin/members")] == ["ann", "bob"]
    assert await get(client, "/v1/admin/members/ann") == created

    patched = await client.patch(
        "/v1/admin/members/ann",
        json={"capacity": 8, "email": None, "away_until": "2030-01-02T10:00:00+02:00", "delegate": "bob"},
        headers=ADMIN,
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["capacity"], body["email"], body["delegate"], body["name"]) == (8, None, "bob", "Ann Example")
    assert body["away_until"] in ("2030-01-02T08:00:00Z", "2030-01-02T08:00:00+00:00")
    assert body["external_ids"] == created["external_ids"]  # absent: unchanged
    back = await client.patch("/v1/admin/members/ann", json={"away_until": None, "delegate": None}, headers=ADMIN)
    assert (back.json()["away_until"], back.json()["delegate"]) == (None, None)

    assert (await client.delete("/v1/admin/members/ann", headers=ADMIN)).status_code == 204
    assert (await client.get("/v1/admin/members/ann", headers=ADMIN)).status_code == 404
    assert [m["id"] for m in await get(client, "/v1/admin/members")] == ["bob"]


async def test_away_until_without_an_offset_is_read_as_utc(client: httpx.AsyncClient) -> None:
    created = await create_member(client, "ann", away_until="2030-01-02T10:00:00")
    assert created["away_until"] in ("2030-01-02T10:00:00Z", "2030-01-02T10:00:00+00:00")


async def test_external_id_of_an_unknown_source_is_422_naming_it(client: httpx.AsyncClient) -> None:
    await create_source(client, "intranet")
    body = {
        "id": "ann",
        "name": "Ann",
        "external_ids": [{"source": "intranet", "id": "u-1"}, {"source": "x", "id": "1"}],
    }
    response = await client.post("/v1/admin/members", json=body, headers=ADMIN)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_payload"
    assert "'x'" in response.json()["detail"]
    assert await get(client, "/v1/admin/members") == []


async def test_external_id_of_a_deleted_source_is_refused(client: httpx.AsyncClient) -> None:
    await create_source(client, "old")
    await client.delete("/v1/admin/sources/old", headers=ADMIN)
    body = {"id": "ann", "name": "Ann", "external_ids": [{"source": "old", "id": "u-1"}]}
    response = await client.post("/v1/admin/members", json=body, headers=ADMIN)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_payload"


async def test_external_id_belongs_to_one_member(client: httpx.AsyncClient) -> None:
    await create_source(client, "intranet")
    await create_source(client, "forum")
    await create_member(client, "ann", external={"intranet": "u-7"})
    taken = {"id": "bob", "name": "Bob", "external_ids": [{"source": "intranet", "id": "u-7"}]}
    response = await client.post("/v1/admin/members", json=taken, headers=ADMIN)
    assert response.status_code == 409
    assert response.json()["code"] == "already_exists"
    assert "'ann'" in response.json()["detail"]
    # The same user id on another source is another person.
    await create_member(client, "bob", external={"forum": "u-7"})
    patched = await client.patch(
        "/v1/admin/members/bob", json={"external_ids": [{"source": "intranet", "id": "u-7"}]}, headers=ADMIN
    )
    assert patched.status_code == 409
    assert "'ann'" in patched.json()["detail"]
    assert (await get(client, "/v1/admin/members/bob"))["external_ids"] == [{"source": "forum", "id": "u-7"}]


async def test_external_id_listed_twice_is_422(client: httpx.AsyncClient) -> None:
    await create_source(client, "intranet")
    twice = [{"source": "intranet", "id": "u-7"}, {"source": "intranet", "id": "u-7"}]
    response = await client.post(
        "/v1/admin/members", json={"id": "ann", "name": "Ann", "external_ids": twice}, headers=ADMIN
    )
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_payload"


async def test_patching_external_ids_replaces_them_and_frees_the_old_ones(client: httpx.AsyncClient) -> None:
    await create_source(client, "intranet")
    await create_source(client, "forum")
    await create_member(client, "ann", external={"intranet": "u-7", "forum": "f-1"})
    # Keeping one of one's own ids is not a conflict; the order given is kept.
    new = [{"source": "forum", "id": "f-1"}, {"source": "intranet", "id": "u-8"}]
    patched = await client.patch("/v1/admin/members/ann", json={"external_ids": new}, headers=ADMIN)
    assert patched.status_code == 200, patched.text
    assert patched.json()["external_ids"] == new
    bob = await create_member(client, "bob", external={"intranet": "u-7"})
    assert bob["external_ids"] == [{"source": "intranet", "id": "u-7"}]
    cleared = await client.patch("/v1/admin/members/ann", json={"external_ids": []}, headers=ADMIN)
    assert cleared.json()["external_ids"] == []


async def test_delegate_must_be_another_live_member(client: httpx.AsyncClient) -> None:
    await create_member(client, "ann")
    await create_member(client, "gone")
    await client.delete("/v1/admin/members/gone", headers=ADMIN)
    for delegate in ("ann", "nobody", "gone"):
        response = await client.patch("/v1/admin/members/ann", json={"delegate": delegate}, headers=ADMIN)
        assert response.status_code == 422, delegate
        assert response.json()["code"] == "invalid_payload"
        assert f"'{delegate}'" in response.json()["detail"] or "own delegate" in response.json()["detail"]
    own = {"id": "cat", "name": "Cat", "delegate": "cat"}
    assert (await client.post("/v1/admin/members", json=own, headers=ADMIN)).status_code == 422
    assert (await create_member(client, "bob", delegate="ann"))["delegate"] == "ann"
    assert (await get(client, "/v1/admin/members/ann"))["delegate"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"id": "Has Caps", "name": "x"},
        {"id": "ann", "name": ""},
        {"id": "ann", "name": "Ann", "capacity": 0},
        {"id": "ann", "name": "Ann", "email": "not-an-email"},
        {"id": "ann", "name": "Ann", "external_ids": [{"source": "intranet"}]},
        {"id": "ann", "name": "Ann", "external_ids": [{"source": "intranet", "id": "u-1", "extra": 1}]},
        {"id": "ann", "name": "Ann", "role": "admin"},
    ],
)
async def test_invalid_member_is_422_and_creates_nothing(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    await create_source(client, "intranet")
    before = await audit_count(client)
    response = await client.post("/v1/admin/members", json=body, headers=ADMIN)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert await get(client, "/v1/admin/members") == []
    assert await audit_count(client) == before


async def test_unknown_fields_in_patches_are_422_and_change_nothing(client: httpx.AsyncClient) -> None:
    await create_member(client, "ann")
    await create_team(client, "hr", ["ann"])
    member, team = await get(client, "/v1/admin/members/ann"), await get(client, "/v1/admin/teams/hr")
    before = await audit_count(client)
    for path, body in [
        ("/v1/admin/members/ann", {"name": "New", "id": "renamed"}),
        ("/v1/admin/members/ann", {"capacity": 3, "teams": ["it"]}),
        ("/v1/admin/teams/hr", {"name": "New", "last_assigned_id": "ann"}),
        ("/v1/admin/teams/hr", {"members": [], "id": "renamed"}),
    ]:
        response = await client.patch(path, json=body, headers=ADMIN)
        assert response.status_code == 422, (path, body)
        assert response.json()["code"] == "validation_error"
    create_team_with_extra = {"id": "it", "name": "IT", "members": [], "last_assigned_id": "ann"}
    assert (await client.post("/v1/admin/teams", json=create_team_with_extra, headers=ADMIN)).status_code == 422
    assert await get(client, "/v1/admin/members/ann") == member
    assert await get(client, "/v1/admin/teams/hr") == team
    assert [t["id"] for t in await get(client, "/v1/admin/teams")] == ["hr"]
    assert await audit_count(client) == before


async def test_members_can_be_listed_by_team(client: httpx.AsyncClient) -> None:
    for member_id in ("ann", "bob", "cat"):
        await create_member(client, member_id)
    await create_team(client, "hr", ["cat", "ann"])
    await create_team(client, "it", ["ann"])
    assert [m["id"] for m in await get(client, "/v1/admin/members?team=hr")] == ["ann", "cat"]
    listed = {m["id"]: m["teams"] for m in await get(client, "/v1/admin/members")}
    assert listed == {"ann": ["hr", "it"], "bob": [], "cat": ["hr"]}
    unknown = await client.get("/v1/admin/members?team=nope", headers=ADMIN)
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "not_found"


async def test_deleting_a_member_removes_them_everywhere_and_revokes_their_keys(client: httpx.AsyncClient) -> None:
    await create_source(client, "intranet")
    await create_member(client, "ann", external={"intranet": "u-7"})
    await create_member(client, "bob", delegate="ann")
    await create_team(client, "hr", ["bob", "ann"], lead="ann")
    await create_team(client, "it", ["bob"], lead="ann")
    ann_key = await responder_headers(client, "ann")
    bob_key = await responder_headers(client, "bob")
    assert (await client.get("/v1/admin/teams", headers=ann_key)).status_code == 403  # valid, but not admin
    for team in ("hr", "it"):  # a lead cannot be deleted (test_deleting_a_team_lead_is_refused_...)
        cleared = await client.patch(f"/v1/admin/teams/{team}", json={"lead": None}, headers=ADMIN)
        assert cleared.status_code == 200, cleared.text

    assert (await client.delete("/v1/admin/members/ann", headers=ADMIN)).status_code == 204

    hr, it = await get(client, "/v1/admin/teams/hr"), await get(client, "/v1/admin/teams/it")
    assert (hr["members"], hr["lead"], it["members"], it["lead"]) == (["bob"], None, ["bob"], None)
    assert (await get(client, "/v1/admin/members/bob"))["delegate"] is None
    refused = await client.get("/v1/admin/teams", headers=ann_key)
    assert refused.status_code == 401
    assert refused.json()["code"] == "unauthenticated"
    assert (await client.get("/v1/admin/teams", headers=bob_key)).status_code == 403  # bob's key still works
    # The freed external id can be given to someone else.
    assert (await create_member(client, "dan", external={"intranet": "u-7"}))["external_ids"] == [
        {"source": "intranet", "id": "u-7"}
    ]

    deleted = await audit_trail(client, "member", "ann")
    assert deleted[-1]["action"] == "member.deleted"
    assert deleted[-1]["before"]["external_ids"] == [{"source": "intranet", "id": "u-7"}]
    assert deleted[-1]["before"]["teams"] == ["hr"]
    hr_trail = await audit_trail(client, "team", "hr")
    assert hr_trail[-1]["action"] == "team.updated"
    assert (hr_trail[-1]["before"]["members"], hr_trail[-1]["after"]["members"]) == (["bob", "ann"], ["bob"])
    bob_trail = await audit_trail(client, "member", "bob")
    assert (bob_trail[-1]["before"], bob_trail[-1]["after"]) == ({"delegate": "ann"}, {"delegate": None})
    factory = client.app.state.services.session_factory  # type: ignore[attr-defined]
    async with factory() as session:
        revoked = (
            await session.execute(sa.text("SELECT count(*) FROM audit_event WHERE action = 'api_key.revoked'"))
        ).scalar_one()
    assert revoked == 1


async def test_deleting_a_team_lead_is_refused_naming_the_teams_it_leads(client: httpx.AsyncClient) -> None:
    await create_member(client, "ann")
    await create_member(client, "bob")
    await create_team(client, "hr", ["bob"], lead="ann")  # a lead need not be a member
    await create_team(client, "it", ["ann", "bob"], lead="ann")
    await create_team(client, "ops", ["ann"], lead="bob")
    before = await audit_count(client)

    refused = await client.delete("/v1/admin/members/ann", headers=ADMIN)

    assert refused.status_code == 409
    problem = refused.json()
    assert (problem["code"], problem["teams"]) == ("invalid_state", ["hr", "it"])
    assert "team 'hr'" in problem["detail"]
    assert "team 'it'" in problem["detail"]
    assert "ops" not in problem["detail"]
    # Nothing changed: ann is still there, still the lead, still in her teams.
    assert (await get(client, "/v1/admin/members/ann"))["teams"] == ["it", "ops"]
    assert [(await get(client, f"/v1/admin/teams/{t}"))["lead"] for t in ("hr", "it")] == ["ann", "ann"]
    assert await audit_count(client) == before

    await client.patch("/v1/admin/teams/hr", json={"lead": "bob"}, headers=ADMIN)
    still = await client.delete("/v1/admin/members/ann", headers=ADMIN)
    assert (still.status_code, still.json()["teams"]) == (409, ["it"])
    await client.patch("/v1/admin/teams/it", json={"lead": None}, headers=ADMIN)
    assert (await client.delete("/v1/admin/members/ann", headers=ADMIN)).status_code == 204
    assert (await get(client, "/v1/admin/teams/it"))["members"] == ["bob"]


async def test_deleted_ids_are_never_reused(client: httpx.AsyncClient) -> None:
    await create_member(client, "ann")
    await create_team(client, "hr", [])
    await client.delete("/v1/admin/members/ann", headers=ADMIN)
    await client.delete("/v1/admin/teams/hr", headers=ADMIN)
    for path, body in [
        ("/v1/admin/members", {"id": "ann", "name": "Another Ann"}),
        ("/v1/admin/teams", {"id": "hr", "name": "New HR"}),
    ]:
        response = await client.post(path, json=body, headers=ADMIN)
        assert response.status_code == 409, path
        assert response.json()["code"] == "already_exists"
        assert "never reused" in response.json()["detail"]


async def test_duplicate_ids_are_409(client: httpx.AsyncClient) -> None:
    await create_member(client, "ann")
    await create_team(client, "hr", [])
    for path, body in [
        ("/v1/admin/members", {"id": "ann", "name": "A"}),
        ("/v1/admin/teams", {"id": "hr", "name": "H"}),
    ]:
        response = await client.post(path, json=body, headers=ADMIN)
        assert response.status_code == 409
        assert response.json()["code"] == "already_exists"


async def test_concurrent_creates_of_one_id_make_one_member(client: httpx.AsyncClient) -> None:
    await create_source(client, "intranet")
    same_id = [{"id": "ann", "name": f"Ann {i}"} for i in range(3)]
    same_external = [
        {"id": f"m{i}", "name": "M", "external_ids": [{"source": "intranet", "id": "u-7"}]} for i in range(3)
    ]
    for bodies in (same_id, same_external):
        responses = await asyncio.gather(*[client.post("/v1/admin/members", json=b, headers=ADMIN) for b in bodies])
        assert sorted(r.status_code for r in responses) == [201, 409, 409]
    assert len(await get(client, "/v1/admin/members")) == 2


async def test_unknown_and_deleted_ids_are_404(client: httpx.AsyncClient) -> None:
    await create_member(client, "ann")
    await create_team(client, "hr", [])
    await client.delete("/v1/admin/members/ann", headers=ADMIN)
    await client.delete("/v1/admin/teams/hr", headers=ADMIN)
    for method, path in [r for r in MEMBER_ROUTES + TEAM_ROUTES if r[1].count("/") == 4] + [
        ("GET", "/v1/admin/members/nobody"),
        ("DELETE", "/v1/admin/teams/none"),
    ]:
        response = await client.request(method, path, headers=ADMIN, json=BODIES.get(method))
        assert response.status_code == 404, (method, path)
        assert response.json()["code"] == "not_found"


# ---- teams --------------------------------------------------------------------------------------------------


async def test_team_can_be_created_listed_read_changed_and_deleted(client: httpx.AsyncClient) -> None:
    for member_id in ("ann", "bob", "cat"):
        await create_member(client, member_id)
    created = await create_team(client, "hr", ["bob", "ann"], lead="cat", strategy="least_loaded")
    assert (created["members"], created["lead"], created["strategy"]) == (["bob", "ann"], "cat", "least_loaded")
    await create_team(client, "it", [])
    assert [t["id"] for t in await get(client, "/v1/admin/teams")] == ["hr", "it"]
    assert await get(client, "/v1/admin/teams/hr") == created
    assert (await get(client, "/v1/admin/members/bob"))["teams"] == ["hr"]

    patched = await client.patch(
        "/v1/admin/teams/hr", json={"members": ["cat", "ann", "bob"], "strategy": "round_robin"}, headers=ADMIN
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["members"], patched.json()["strategy"]) == (["cat", "ann", "bob"], "round_robin")
    assert patched.json()["lead"] == "cat"  # absent: unchanged
    reordered = await client.patch("/v1/admin/teams/hr", json={"members": ["bob", "cat"], "lead": None}, headers=ADMIN)
    assert (reordered.json()["members"], reordered.json()["lead"]) == (["bob", "cat"], None)
    assert (await get(client, "/v1/admin/members/ann"))["teams"] == []

    assert (await client.delete("/v1/admin/teams/hr", headers=ADMIN)).status_code == 204
    assert (await client.get("/v1/admin/teams/hr", headers=ADMIN)).status_code == 404
    assert [t["id"] for t in await get(client, "/v1/admin/teams")] == ["it"]
    assert (await get(client, "/v1/admin/members/bob"))["teams"] == []


async def test_team_members_must_be_live_members_listed_once(client: httpx.AsyncClient) -> None:
    await create_member(client, "ann")
    await create_member(client, "gone")
    await client.delete("/v1/admin/members/gone", headers=ADMIN)
    for members, named in [(["ann", "nobody"], "'nobody'"), (["ann", "gone"], "'gone'"), (["ann", "ann"], "'ann'")]:
        response = await client.post(
            "/v1/admin/teams", json={"id": "hr", "name": "HR", "members": members}, headers=ADMIN
        )
        assert response.status_code == 422, members
        assert response.json()["code"] == "invalid_payload"
        assert named in response.json()["detail"]
    assert await get(client, "/v1/admin/teams") == []
    await create_team(client, "hr", ["ann"])
    response = await client.patch("/v1/admin/teams/hr", json={"members": ["ann", "nobody"]}, headers=ADMIN)
    assert response.status_code == 422
    assert (await get(client, "/v1/admin/teams/hr"))["members"] == ["ann"]


async def test_team_lead_must_be_a_live_member_but_need_not_be_in_the_team(client: httpx.AsyncClient) -> None:
    await create_member(client, "ann")
    await create_member(client, "boss")
    for lead in ("nobody", "Bad Id"):
        body = {"id": "hr", "name": "HR", "members": ["ann"], "lead": lead}
        assert (await client.post("/v1/admin/teams", json=body, headers=ADMIN)).status_code == 422
    assert (await create_team(client, "hr", ["ann"], lead="boss"))["lead"] == "boss"
    response = await client.patch("/v1/admin/teams/hr", json={"lead": "nobody"}, headers=ADMIN)
    assert response.status_code == 422
    assert "'nobody'" in response.json()["detail"]
    bad_strategy = await client.patch("/v1/admin/teams/hr", json={"strategy": "random"}, headers=ADMIN)
    assert bad_strategy.status_code == 422


# ---- audit and access ---------------------------------------------------------------------------------------


async def test_every_directory_change_is_audited(client: httpx.AsyncClient) -> None:
    await create_member(client, "ann", email="ann@example.com")
    await client.patch("/v1/admin/members/ann", json={"capacity": 3}, headers=ADMIN)
    await create_team(client, "hr", ["ann"])
    await client.patch("/v1/admin/teams/hr", json={"name": "People"}, headers=ADMIN)
    await client.delete("/v1/admin/teams/hr", headers=ADMIN)
    await client.delete("/v1/admin/members/ann", headers=ADMIN)

    member = await audit_trail(client, "member", "ann")
    assert [e["action"] for e in member] == ["member.created", "member.updated", "member.deleted"]
    assert all(e["actor"].startswith("key:") for e in member)
    assert member[0]["before"] is None
    assert member[0]["after"]["email"] == "ann@example.com"
    assert (member[1]["before"]["capacity"], member[1]["after"]["capacity"]) == (20, 3)
    assert (member[2]["before"]["name"], member[2]["after"]) == ("Ann", None)
    team = await audit_trail(client, "team", "hr")
    assert [e["action"] for e in team] == ["team.created", "team.updated", "team.deleted"]
    assert team[0]["after"] == {"name": "HR", "members": ["ann"], "lead": None, "strategy": "round_robin"}
    assert (team[1]["before"]["name"], team[1]["after"]["name"]) == ("HR", "People")
    assert team[2]["before"]["members"] == ["ann"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sbk_nope"}])
async def test_directory_routes_need_a_key(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    for method, path in MEMBER_ROUTES + TEAM_ROUTES:
        response = await client.request(method, path, headers=headers, json=BODIES.get(method))
        assert response.status_code == 401, (method, path)
        assert response.json()["code"] == "unauthenticated"


async def test_responder_key_is_forbidden_on_every_directory_route(client: httpx.AsyncClient) -> None:
    await create_member(client, "ann")
    await create_team(client, "hr", ["ann"])
    responder = await responder_headers(client, "ann")
    before = await audit_count(client)
    for method, path in MEMBER_ROUTES + TEAM_ROUTES:
        response = await client.request(method, path, headers=responder, json=BODIES.get(method))
        assert response.status_code == 403, (method, path)
        assert response.json()["code"] == "forbidden"
    assert (await get(client, "/v1/admin/members/ann"))["name"] == "Ann"
    assert (await get(client, "/v1/admin/teams/hr"))["members"] == ["ann"]
    assert await audit_count(client) == before


# ---- the CLI ------------------------------------------------------------------------------------------------


def run_create_key(database_url: str, member: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603  (our own CLI)
        [sys.executable, "-m", "switchboard.cli", "create-key", "--role", "responder", "--member", member],
        env={**os.environ, "SWITCHBOARD_DATABASE_URL": database_url},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


async def test_create_key_refuses_an_unknown_or_deleted_member(client: httpx.AsyncClient, database_url: str) -> None:
    await create_member(client, "ann")
    await create_member(client, "gone")
    await client.delete("/v1/admin/members/gone", headers=ADMIN)
    for member in ("nobody", "gone"):
        # In a thread: the app's event loop keeps running while the CLI uses the same database.
        refused = await asyncio.to_thread(run_create_key, database_url, member)
        assert refused.returncode != 0
        assert f"no member '{member}'" in refused.stderr
        assert "sbk_" not in refused.stdout
    created = await asyncio.to_thread(run_create_key, database_url, "ann")
    assert created.returncode == 0, created.stderr
    key = {"Authorization": f"Bearer {created.stdout.strip()}"}
    assert (await client.get("/v1/admin/members", headers=key)).status_code == 403  # a working responder key
