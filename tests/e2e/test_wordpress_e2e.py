"""WordPress end to end, for real: Debian's WordPress with the Switchboard Connector plugin, and a real `switchboard
serve` (the embedded default: SQLite, the in-process worker, the real model).

A subscriber comments on a story; the comment reaches Switchboard through the plugin and is routed to the story's
author; the author answers in Switchboard and the answer appears in WordPress under the comment, exactly once,
written as the author's WordPress user, and its echo opens no item. A comment that sells something is held in
Switchboard and therefore in WordPress; approving it in Switchboard approves it in WordPress, and rejecting another
sends that one to spam.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.conftest import make_settings
from tests.factories import ADMIN, ADMIN_KEY
from tests.processes import ROOT, served
from tests.wordpress import AsyncWordPressSite, async_wordpress_site

pytestmark = pytest.mark.slow

T = TypeVar("T")
HOLD_SALES = {
    "id": "hold-sales",
    "name": "Hold comments that sell something",
    "when": {"field": "text", "op": "contains", "value": "cheap"},
    "then": {"assign": {"to": "team", "team": "mods"}, "hold": True},
}
TO_AUTHOR = {"id": "author", "name": "The story's author answers", "then": {"assign": {"to": "thread_author"}}}


async def eventually(what: str, probe: Callable[[], Awaitable[T | None]], timeout: float = 60) -> T:  # noqa: ASYNC109
    """Poll `probe` until it returns something other than None (or False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await probe()
        if found:
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"not seen within {timeout} s: {what}")


def create_key(env: dict[str, str], member: str) -> str:
    """`switchboard create-key --role responder --member <member>`, as an admin would run it."""
    done = subprocess.run(  # noqa: S603  (our own CLI)
        [sys.executable, "-m", "switchboard.cli", "create-key", "--role", "responder", "--member", member],
        env={**env, "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture
async def wordpress(tmp_path: Path) -> AsyncIterator[AsyncWordPressSite]:
    async with async_wordpress_site(tmp_path / "wordpress") as site:
        yield site


STATES = ["held", "open", "claimed", "escalated", "answered", "resolved"]


async def item_of(api: httpx.AsyncClient, external_id: int) -> dict[str, Any] | None:
    """The queue item (in detail) of the WordPress comment `external_id`, if there is one."""
    found = await api.get("/v1/queue", params={"state": STATES, "limit": 100}, headers=ADMIN)
    assert found.status_code == 200, found.text
    for item in found.json()["items"]:
        detail = (await api.get(f"/v1/queue/{item['id']}", headers=ADMIN)).json()
        if detail["comment"]["external_id"] == str(external_id):
            return dict(detail)
    return None


async def test_a_comment_is_routed_to_the_story_author_whose_answer_appears_in_wordpress_once(
    wordpress: AsyncWordPressSite, tmp_path: Path
) -> None:
    # WordPress: a story by Anna (an author), a subscriber, and an editor whose Application Password Switchboard uses.
    anna = await wordpress.create_user("anna", "author", "Anna Author")
    for login, name in (("sam", "Sam Subscriber"), ("kim", "Kim Subscriber"), ("lee", "Lee Subscriber")):
        await wordpress.create_user(login, "subscriber", name)
    await wordpress.create_user("erin", "editor", "Erin Editor")
    password = await wordpress.application_password("erin")
    post = await wordpress.create_post("anna", "The canteen reopens", categories=["News"])

    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'switchboard.db'}")
    env = {
        "SWITCHBOARD_DATABASE_URL": settings.database_url,
        "SWITCHBOARD_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "SWITCHBOARD_ENCRYPTION_KEYS": settings.encryption_keys.get_secret_value() if settings.encryption_keys else "",
    }
    with served(env, tmp_path / "switchboard.log") as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as api:
            created = await api.post(
                "/v1/admin/sources",
                json={
                    "slug": "intranet-news", "name": "Intranet news", "kind": "wordpress",
                    "settings": {"site_url": wordpress.url, "username": "erin", "reject_as": "spam"},
                    "credentials": {"application_password": password},
                },
                headers=ADMIN,
            )  # fmt: skip
            assert created.status_code == 201, created.text
            source = created.json()
            assert source["capabilities"] == ["receive", "reply", "hold", "release", "reject"]
            assert source["credentials_set"] == ["application_password"]
            assert password not in created.text
            # The WordPress admin pastes the webhook URL and the secret into Settings > Switchboard.
            await wordpress.configure_switchboard(f"{base_url}{source['webhook_path']}", source["secret"])
            member = {
                "id": "anna",
                "name": "Anna Author",
                "external_ids": [{"source": "intranet-news", "id": str(anna)}],
            }
            assert (await api.post("/v1/admin/members", json=member, headers=ADMIN)).status_code == 201
            assert (
                await api.post("/v1/admin/members", json={"id": "mo", "name": "Mo"}, headers=ADMIN)
            ).status_code == 201
            team = {"id": "mods", "name": "Moderators", "members": ["mo"], "strategy": "round_robin"}
            assert (await api.post("/v1/admin/teams", json=team, headers=ADMIN)).status_code == 201
            rules = await api.put("/v1/admin/rules", json={"rules": [HOLD_SALES, TO_AUTHOR]}, headers=ADMIN)
            assert rules.status_code == 200, rules.text

            # A subscriber asks a question under Anna's story.
            question = await wordpress.post_comment(
                post, "When does the canteen open again after the works?", as_login="sam"
            )

            async def routed() -> dict[str, Any] | None:
                return await item_of(api, question)

            item = await eventually("the question routed", routed)
            assert item["member"] == "anna"
            assert item["state"] == "open"

            # Anna answers in Switchboard; the answer appears under the question in WordPress, as Anna.
            anna_key = create_key(env, "anna")
            answer = "It opens again on Monday at 8:00."
            answered = await api.post(
                f"/v1/queue/{item['id']}/answer",
                json={"body": answer},
                headers={"Authorization": f"Bearer {anna_key}"},
            )
            assert answered.status_code == 200, answered.text

            async def replies() -> list[dict[str, Any]] | None:
                children = [c for c in await wordpress.comments(post) if c["parent"] == question]
                return children or None

            children = await eventually("the answer in WordPress", replies)
            assert len(children) == 1
            reply = children[0]
            assert reply["author"] == anna
            assert reply["content"]["raw"] == answer
            assert reply["status"] == "approved"

            async def delivered() -> dict[str, Any] | None:
                got: dict[str, Any] = (await api.get(f"/v1/queue/{item['id']}", headers=ADMIN)).json()
                replies = got.get("replies") or []
                return got if replies and replies[0]["delivery_state"] == "delivered" else None

            final = await eventually("the reply recorded as delivered", delivered)
            assert final["replies"][0]["external_id"] == str(reply["id"])
            # The echo of the answer (the plugin sends it back) opens no item; the answer was written once.
            await asyncio.sleep(2)
            assert await item_of(api, reply["id"]) is None
            children = [c for c in await wordpress.comments(post) if c["parent"] == question]
            assert [c["id"] for c in children] == [reply["id"]]

            # A comment that sells something is held in Switchboard, and so in WordPress.
            advert = await wordpress.post_comment(post, "Cheap watches, visit my shop today!", as_login="sam")
            held = await eventually("the advert held", lambda: item_of(api, advert))
            assert held["state"] == "held"

            async def status_of(comment: int, status: str) -> bool:
                return bool((await wordpress.comment(comment))["status"] == status)

            await eventually("the advert held in WordPress", lambda: status_of(advert, "hold"))
            # A moderator approves it in Switchboard: WordPress shows it again.
            approved = await api.post(f"/v1/queue/{held['id']}/approve", headers=ADMIN)
            assert approved.status_code == 200, approved.text
            await eventually("the advert approved in WordPress", lambda: status_of(advert, "approved"))

            # The WordPress editor approves a held comment on the site first and Switchboard approves it after:
            # WordPress refuses a status a comment already has (500), which Switchboard reads back as done.
            # (Another commenter: Sam's later comments on the story are follow-ups of his open one.)
            offer = await wordpress.post_comment(post, "Cheap tickets for the summer party, ask me", as_login="kim")
            third = await eventually("the offer held", lambda: item_of(api, offer))
            await eventually("the offer held in WordPress", lambda: status_of(offer, "hold"))
            await wordpress.set_status(offer, "approved")
            assert (await api.post(f"/v1/queue/{third['id']}/approve", headers=ADMIN)).status_code == 200

            async def released() -> dict[str, Any] | None:
                page = await api.get(
                    "/v1/admin/deliveries",
                    params={"kind": "comment.released", "comment": third["comment_id"]},
                    headers=ADMIN,
                )
                done = [d for d in page.json()["items"] if d["state"] in ("delivered", "dead")]
                return done[0] if done else None

            release = await eventually("the offer's release delivered", released)
            assert release["state"] == "delivered", release
            assert (await wordpress.comment(offer))["status"] == "approved"

            # Another is rejected in Switchboard: WordPress files it as spam.
            spam = await wordpress.post_comment(post, "Cheap loans, no questions asked", as_login="lee")
            second = await eventually("the second advert held", lambda: item_of(api, spam))
            await eventually("the second advert held in WordPress", lambda: status_of(spam, "hold"))
            rejected = await api.post(f"/v1/queue/{second['id']}/resolve", json={"reason": "spam"}, headers=ADMIN)
            assert rejected.status_code == 200, rejected.text
            await eventually("the second advert in spam", lambda: status_of(spam, "spam"))
