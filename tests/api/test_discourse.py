"""The Discourse connector through the API: Discourse's signed webhooks become comments and threads (retries and
replays changing nothing), and answers and moderation decisions reach a local Discourse (`tests/discourse.py`, the
part of Discourse's REST API Switchboard uses) through the outbox, once, with the echo of a reply opening no item.

The app runs with the real model and its in-process delivery loop on the FakeClock (the `client` fixture); outbound
tests let time pass and wait for the outbox to settle with the helpers of `tests/e2e/test_outbound_e2e.py`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from service.connectors.discourse import DiscourseAdapter
from service.errors import InvalidSignature
from tests.clock import FakeClock
from tests.conftest import drain
from tests.discourse import Answer, FakeDiscourse, WebhookEvent, rate_limited, signature
from tests.e2e.test_outbound_e2e import (
    HOLD_NEWS,
    RESPONDER_NAME,
    TO_HR,
    answer,
    deliveries,
    detail,
    item_of,
    let_time_pass,
    quiet,
)
from tests.factories import ADMIN, create_member, create_team, put_rules, responder_headers

# Discourse's own spec (spec/jobs/emit_web_hook_event_spec.rb, "sets up proper request headers"), with the secret of
# spec/fabricators/web_hook_fabricator.rb.
VECTOR_SECRET = "my_lovely_secret_for_web_hook"
VECTOR_BODY = b'{"ping":"OK"}'
VECTOR_SIGNATURE = "sha256=162f107f6b5022353274eb1a7197885cfd35744d8d08e5bcea025d309386b7d6"
MARKER = re.compile(r"\n\n<!-- switchboard:([0-9a-f-]{36}) -->\Z")


@pytest.fixture
def forum() -> Iterator[FakeDiscourse]:
    """A Discourse with a moderator for Switchboard's API key, a topic author, a commenter and a responder."""
    with FakeDiscourse() as running:
        running.add_user("switchboard", name="Switchboard", staff=True)
        running.add_user("Olga", name="Olga Owner")
        running.add_user("sam", name="Sam Commenter")
        running.add_user("rita", name=RESPONDER_NAME)
        yield running


async def discourse_source(
    api: httpx.AsyncClient, forum: FakeDiscourse, *, key: str | None = None, reject_as: str = "hide"
) -> str:
    """A `discourse` source on the forum (an all-users key unless one is given); returns its signing secret."""
    body = {
        "slug": "forum",
        "name": "Staff forum",
        "kind": "discourse",
        "settings": {"base_url": forum.url, "api_username": "switchboard", "reject_as": reject_as},
        "credentials": {"api_key": key or forum.add_key()},
    }
    created = await api.post("/v1/admin/sources", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    secret: str = created.json()["secret"]
    return secret


async def routed_source(api: httpx.AsyncClient, forum: FakeDiscourse, *, rita: bool = False, **options: Any) -> str:
    """A source, a responder in HR (`rita`: mapped to Rita's Discourse user), a moderator, and rules: comments
    selling something are held, the rest go to HR."""
    secret = await discourse_source(api, forum, **options)
    await create_member(api, "r1", name=RESPONDER_NAME, external={"forum": "rita"} if rita else None)
    await create_member(api, "mod1", name="Mo Derator")
    await create_team(api, "hr", ["r1"])
    await create_team(api, "mods", ["mod1"])
    await put_rules(api, [HOLD_NEWS, TO_HR])
    return secret


async def deliver(api: httpx.AsyncClient, secret: str | None, event: WebhookEvent, **kw: Any) -> httpx.Response:
    """One attempt of a webhook, as Discourse sends it."""
    body, headers = event.delivery(secret, **kw)
    return await api.post("/v1/webhooks/forum", content=body, headers=headers)


async def comment(api: httpx.AsyncClient, comment_id: str) -> dict[str, Any]:
    response = await api.get(f"/v1/comments/{comment_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def story(forum: FakeDiscourse) -> int:
    """Olga's topic in Facilities; returns its id."""
    return forum.create_topic(
        "Olga", "Shuttle bus timetable", "The new timetable starts Monday.", category=(5, "facilities")
    )


# ---- the source -------------------------------------------------------------------------------------------------


async def test_a_discourse_source_keeps_its_api_key_secret_and_can_reply_and_moderate(
    client: httpx.AsyncClient, forum: FakeDiscourse
) -> None:
    key = forum.add_key()
    await discourse_source(client, forum, key=key)
    shown = await client.get("/v1/admin/sources/forum", headers=ADMIN)
    assert shown.json()["kind"] == "discourse"
    assert shown.json()["credentials_set"] == ["api_key"]
    assert shown.json()["capabilities"] == ["receive", "reply", "hold", "release", "reject"]  # no `resolve`
    assert key not in shown.text
    patched = await client.patch("/v1/admin/sources/forum", json={"credentials": {"api_key": None}}, headers=ADMIN)
    assert patched.json()["capabilities"] == ["receive"]


@pytest.mark.parametrize(
    ("settings", "credentials"),
    [
        ({"site_url": "https://forum.example"}, {}),  # a WordPress setting
        ({"base_url": "forum.example"}, {}),
        ({"reject_as": "spam"}, {}),
        ({"api_username": ""}, {}),
        ({"api_username": "two words"}, {}),
        ({}, {"api_key": ""}),
        ({}, {"password": "x"}),
    ],
)
async def test_bad_discourse_settings_are_refused_and_nothing_is_created(
    client: httpx.AsyncClient, settings: dict[str, Any], credentials: dict[str, Any]
) -> None:
    body = {"slug": "forum", "name": "Forum", "kind": "discourse", "settings": settings, "credentials": credentials}
    response = await client.post("/v1/admin/sources", json=body, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_payload"
    assert (await client.get("/v1/admin/sources", headers=ADMIN)).json() == []


# ---- signatures -------------------------------------------------------------------------------------------------


def test_the_signature_of_discourses_own_spec_verifies() -> None:
    def check(body: bytes, signature: str) -> str:
        return DiscourseAdapter().verify(
            body=body,
            headers={"X-Discourse-Event-Signature": signature, "X-Discourse-Event": "ping"},
            secrets=["whsec_another-secret", VECTOR_SECRET],  # during a rotation: either may sign
            tolerance_seconds=300,
            now=datetime.now(UTC),
        )

    assert check(VECTOR_BODY, VECTOR_SIGNATURE).startswith("discourse:ping:")
    with pytest.raises(InvalidSignature):
        check(b'{"ping":"OK!"}', VECTOR_SIGNATURE)
    with pytest.raises(InvalidSignature):
        check(VECTOR_BODY, VECTOR_SIGNATURE.replace("sha256=", "sha1="))


async def test_a_signed_post_is_accepted_and_a_wrong_or_missing_signature_is_refused(
    client: httpx.AsyncClient, forum: FakeDiscourse
) -> None:
    secret = await discourse_source(client, forum)
    post = forum.create_post(story(forum), "sam", "Will the shuttle bus run during the strike?", reply_to=1)
    event = forum.event("post_created", post)
    for wrong in ("whsec_not-the-secret", None):
        refused = await deliver(client, wrong, event)
        assert refused.status_code == 401, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["code"] == "invalid_signature"
    accepted = await deliver(client, secret, event)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["outcome"] == "created"


async def test_a_ping_is_answered_and_stores_nothing(client: httpx.AsyncClient, forum: FakeDiscourse) -> None:
    secret = await discourse_source(client, forum)
    answered = await deliver(client, secret, forum.ping())
    assert answered.status_code == 202, answered.text
    assert answered.json() == {"id": None, "status": "accepted", "outcome": "ignored"}


# ---- what posts become ------------------------------------------------------------------------------------------


async def test_an_automatic_retry_with_a_new_event_id_is_one_delivery(
    client: httpx.AsyncClient, forum: FakeDiscourse
) -> None:
    secret = await discourse_source(client, forum)
    post = forum.create_post(story(forum), "sam", "Will the shuttle bus run during the strike?", reply_to=1)
    event = forum.event("post_created", post)
    first = await deliver(client, secret, event)
    retried = await deliver(client, secret, event)  # Discourse's retry: a new X-Discourse-Event-Id, the same payload
    redelivered = await deliver(client, secret, event, event_id=1)  # the admin's "Redeliver": the same id too
    assert first.status_code == 202, first.text
    for again in (retried, redelivered):
        assert again.status_code == 200, again.text
        assert again.json() == {"id": first.json()["id"], "status": "duplicate", "outcome": "created"}
    await drain(client)
    assert (await comment(client, first.json()["id"]))["versions"] == 1


async def test_a_topic_is_the_thread_its_opening_post_names_the_author_and_replies_find_their_parent(
    client: httpx.AsyncClient, forum: FakeDiscourse
) -> None:
    secret = await discourse_source(client, forum)
    topic = story(forum)
    (opening,) = forum.posts(topic)
    question = forum.create_post(topic, "sam", "Will the shuttle bus run during the strike?", reply_to=1)
    follow_up = forum.create_post(topic, "Olga", "Yes, on the **Sunday** timetable.", reply_to=2)
    first = await deliver(client, secret, forum.event("post_created", opening.id))
    assert first.status_code == 202, first.text
    assert first.json() == {"id": None, "status": "accepted", "outcome": "ignored"}  # the story, not a comment
    asked = await deliver(client, secret, forum.event("post_created", question))
    answered = await deliver(client, secret, forum.event("post_created", follow_up))
    await drain(client)

    shown = await comment(client, asked.json()["id"])
    assert shown["external_id"] == f"{topic}:2"
    assert shown["parent_id"] is None  # a reply to the opening post answers the story itself
    assert shown["body"] == "Will the shuttle bus run during the strike?"
    assert (shown["author_id"], shown["author_name"]) == ("sam", "Sam Commenter")
    assert shown["posted_at"] is not None
    assert shown["edited_at"] is None
    assert shown["thread"] == {
        "id": str(topic),
        "title": "Shuttle bus timetable",
        "url": None,
        "kind": "forum",
        "channel": "facilities",
        "author_id": "olga",  # Discourse usernames are case-insensitive: kept in lower case
        "author_name": "Olga Owner",
    }
    reply = await comment(client, answered.json()["id"])
    assert (reply["external_id"], reply["parent_id"]) == (f"{topic}:3", f"{topic}:2")
    assert reply["body"] == "Yes, on the **Sunday** timetable."  # the Markdown as written
    assert reply["thread"]["author_id"] == "olga"  # kept, though a reply's event does not name the topic's author


async def test_edits_deletions_and_recoveries_map_as_documented(
    client: httpx.AsyncClient, forum: FakeDiscourse
) -> None:
    secret = await discourse_source(client, forum)
    topic = story(forum)
    post = forum.create_post(topic, "sam", "Will the shuttle bus run during the strike?", reply_to=1)
    created = await deliver(client, secret, forum.event("post_created", post))
    comment_id = created.json()["id"]
    forum.edit(post, "Will the shuttle bus run during the strike on Friday?")
    edited = forum.event("post_edited", post)
    forum.edit(post, "Will the shuttle bus run during the strike on Friday morning?", new_version=False)
    regraced = forum.event("post_edited", post)  # an edit in the grace period: the same version, a later time
    assert (await deliver(client, secret, regraced)).json()["outcome"] == "updated"
    late = await deliver(client, secret, edited)  # the older edit, delivered after the newer one
    assert late.json()["outcome"] == "ignored_stale"
    shown = await comment(client, comment_id)
    assert shown["body"] == "Will the shuttle bus run during the strike on Friday morning?"
    assert shown["edited_at"] is not None

    await drain(client)  # processed first: this test is about the mapping, not a deletion racing processing
    forum.delete_as_author(post)
    deleted = await deliver(client, secret, forum.event("post_destroyed", post))
    assert (deleted.status_code, deleted.json()["outcome"]) == (202, "deleted")
    forum.recover(post)
    recovered = await deliver(client, secret, forum.event("post_recovered", post))
    assert recovered.json()["outcome"] == "ignored_deleted"  # its text was erased on deletion: it stays deleted
    replayed = await deliver(client, secret, forum.event("post_created", post))
    assert replayed.json()["outcome"] == "ignored_deleted"
    shown = await comment(client, comment_id)
    assert (shown["body"], shown["deleted_at"] is not None) == ("", True)

    # A moderator's deletion of a post Switchboard never saw leaves a tombstone; its late creation stays deleted.
    unseen = forum.create_post(topic, "sam", "This one was deleted before it arrived.", reply_to=1)
    early = forum.event("post_created", unseen)
    forum.destroy(unseen)
    assert (await deliver(client, secret, forum.event("post_destroyed", unseen))).json()["outcome"] == "deleted"
    assert (await deliver(client, secret, early)).json()["outcome"] == "ignored_deleted"


async def test_whispers_and_malformed_posts(client: httpx.AsyncClient, forum: FakeDiscourse) -> None:
    secret = await discourse_source(client, forum)
    whisper = forum.create_post(story(forum), "switchboard", "Staff only: keep an eye on this one.", post_type=4)
    ignored = await deliver(client, secret, forum.event("post_created", whisper))
    assert (ignored.status_code, ignored.json()["outcome"]) == (202, "ignored")
    body = b'{"post": {"id": "not a number"}}'
    refused = await client.post(
        "/v1/webhooks/forum",
        content=body,
        headers={
            "X-Discourse-Event": "post_created",
            "X-Discourse-Event-Signature": "sha256=" + signature(secret, body),
        },
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "invalid_payload"
    assert {tuple(e["loc"]) for e in refused.json()["errors"]} >= {("post", "id"), ("post", "topic_id")}


# ---- answers --------------------------------------------------------------------------------------------------


async def question_item(
    api: httpx.AsyncClient, forum: FakeDiscourse, secret: str, text: str
) -> tuple[int, dict[str, Any]]:
    """Sam asks in Olga's topic; the comment is processed and routed. The topic id and the item."""
    topic = story(forum)
    post = forum.create_post(topic, "sam", text, reply_to=1)
    assert (await deliver(api, secret, forum.event("post_created", post))).status_code == 202
    await drain(api)
    item = await item_of(api, f"{topic}:2")
    assert item is not None
    return topic, item


async def test_an_answer_reaches_discourse_once_with_its_marker_and_its_echo_opens_no_item(
    client: httpx.AsyncClient, forum: FakeDiscourse
) -> None:
    key = forum.add_key()
    secret = await routed_source(client, forum, key=key)
    topic, item = await question_item(client, forum, secret, "Will the shuttle bus run during the strike?")
    await answer(client, item["id"], "Yes: it runs on the Sunday timetable.", await responder_headers(client, "r1"))
    await quiet(client)

    (posted,) = forum.calls("POST", "/posts.json")
    assert (posted.status, posted.headers["api-key"], posted.headers["api-username"]) == (200, key, "switchboard")
    sent = posted.json()
    assert (sent["topic_id"], sent["reply_to_post_number"]) == (topic, 2)
    found = MARKER.search(sent["raw"])
    assert found is not None
    reply = (await detail(client, item["id"]))["replies"][0]
    assert found.group(1) == reply["id"]
    assert sent["raw"].startswith(f"Yes: it runs on the Sunday timetable.\n\n— {RESPONDER_NAME}")
    assert (reply["delivery_state"], reply["external_id"]) == ("delivered", f"{topic}:3")
    written = forum.posts(topic)[-1]
    assert (written.post_number, written.user.username, written.reply_to_post_number) == (3, "switchboard", 2)

    echo = await deliver(client, secret, forum.event("post_created", written.id))
    assert echo.status_code == 202, echo.text
    await drain(client)
    assert await item_of(client, f"{topic}:3") is None  # our own reply, come back
    assert (await comment(client, echo.json()["id"]))["body"] == (
        f"Yes: it runs on the Sunday timetable.\n\n— {RESPONDER_NAME}"  # the marker is not part of the text
    )
    assert (await detail(client, item["id"]))["state"] == "answered"
    await quiet(client)
    assert len(forum.calls("POST", "/posts.json")) == 1  # item.resolved is not sent: Discourse has no such notion


async def test_a_responder_mapped_to_a_discourse_user_writes_as_that_user(
    client: httpx.AsyncClient, forum: FakeDiscourse
) -> None:
    secret = await routed_source(client, forum, rita=True)
    topic, item = await question_item(client, forum, secret, "Will the shuttle bus run during the strike?")
    await answer(client, item["id"], "Yes: it runs on the Sunday timetable.", await responder_headers(client, "r1"))
    await quiet(client)
    (posted,) = forum.calls("POST", "/posts.json")
    assert posted.headers["api-username"] == "rita"
    assert RESPONDER_NAME not in posted.json()["raw"]  # no signature: the post is Rita's own
    assert forum.posts(topic)[-1].user.username == "rita"


async def test_a_single_user_key_cannot_write_as_a_responder_and_the_reply_is_dead_with_discourses_answer(
    client: httpx.AsyncClient, forum: FakeDiscourse
) -> None:
    secret = await routed_source(client, forum, rita=True, key=forum.add_key("switchboard"))
    _, item = await question_item(client, forum, secret, "Will the shuttle bus run during the strike?")
    await answer(client, item["id"], "Yes: it runs on the Sunday timetable.", await responder_headers(client, "r1"))
    await quiet(client)
    (dead,) = await deliveries(client, state="dead")
    assert (dead["kind"], dead["last_status"]) == ("reply.created", 403)
    assert "API username or key is invalid" in dead["last_error"]


async def test_an_answer_whose_acknowledgement_was_lost_is_found_by_its_marker_and_not_posted_twice(
    client: httpx.AsyncClient, clock: FakeClock, forum: FakeDiscourse
) -> None:
    secret = await routed_source(client, forum)
    topic, item = await question_item(client, forum, secret, "Will the shuttle bus run during the strike?")
    forum.script(Answer(502, perform=True), when=lambda r: r.method == "POST" and r.path == "/posts.json")
    await answer(client, item["id"], "Yes: it runs on the Sunday timetable.", await responder_headers(client, "r1"))
    await quiet(client)
    assert (await detail(client, item["id"]))["replies"][0]["delivery_state"] == "failed"
    assert len(forum.posts(topic)) == 3  # Discourse wrote it; the answer never came back

    await let_time_pass(client, clock, 10)
    assert len(forum.calls("POST", "/posts.json")) == 1  # the retry found the reply instead of posting again
    assert len(forum.posts(topic)) == 3
    reply = (await detail(client, item["id"]))["replies"][0]
    assert (reply["delivery_state"], reply["external_id"]) == ("delivered", f"{topic}:3")


async def test_a_reply_waiting_for_approval_is_recognised_by_its_marker_when_it_appears(
    client: httpx.AsyncClient, forum: FakeDiscourse
) -> None:
    secret = await routed_source(client, forum)
    forum.require_approval("switchboard")
    topic, item = await question_item(client, forum, secret, "Will the shuttle bus run during the strike?")
    await answer(client, item["id"], "Yes: it runs on the Sunday timetable.", await responder_headers(client, "r1"))
    await quiet(client)
    reply = (await detail(client, item["id"]))["replies"][0]
    assert (reply["delivery_state"], reply["external_id"]) == ("delivered", None)  # queued in Discourse: no post yet
    (pending,) = forum.pending()
    approved = forum.approve(pending)
    echo = await deliver(client, secret, forum.event("post_created", approved))
    assert echo.status_code == 202
    await drain(client)
    assert await item_of(client, f"{topic}:3") is None  # only the marker says whose it is


async def test_discourses_rate_limit_holds_the_next_attempt_back(
    client: httpx.AsyncClient, clock: FakeClock, forum: FakeDiscourse
) -> None:
    secret = await routed_source(client, forum)
    _, item = await question_item(client, forum, secret, "Will the shuttle bus run during the strike?")
    # Once with Retry-After, once with only the body's extras.wait_seconds: each holds the retry back 30 s, where
    # the backoff alone would retry within 2 s.
    forum.script(rate_limited(30), rate_limited(30, header=False), when=lambda r: r.path == "/posts.json")
    await answer(client, item["id"], "Yes: it runs on the Sunday timetable.", await responder_headers(client, "r1"))
    await quiet(client)
    for waited in (1, 2):
        clock.advance(25)
        await quiet(client)
        assert [r.status for r in forum.calls("POST", "/posts.json")] == [429] * waited
        clock.advance(6)
        await quiet(client)
    assert [r.status for r in forum.calls("POST", "/posts.json")] == [429, 429, 200]
    (sent,) = await deliveries(client, kind="reply.created")
    assert (sent["state"], sent["attempts"]) == ("delivered", 3)


# ---- moderation -----------------------------------------------------------------------------------------------


async def test_hold_release_and_reject_hide_unhide_and_delete_the_post(
    client: httpx.AsyncClient, forum: FakeDiscourse
) -> None:
    secret = await routed_source(client, forum, reject_as="delete")
    mod = await responder_headers(client, "mod1")
    topic, held = await question_item(client, forum, secret, "Get cheap watches at example.com, why not?")
    assert held["state"] == "held"
    await quiet(client)
    post = forum.posts(topic)[1]
    assert post.hidden
    (flag,) = forum.calls("POST", "/post_actions.json")
    assert flag.json() == {"id": post.id, "post_action_type_id": 4, "take_action": "true"}

    assert (await client.post(f"/v1/queue/{held['id']}/approve", headers=mod)).status_code == 200
    await quiet(client)
    assert not forum.post(post.id).hidden
    assert len(forum.calls("PUT", rf"/posts/{post.id}/unhide")) == 1

    other = forum.create_post(topic, "sam", "Really cheap watches here, and cheaper ones too!", reply_to=1)
    assert (await deliver(client, secret, forum.event("post_created", other))).status_code == 202
    await drain(client)
    spam = await item_of(client, f"{topic}:3")
    assert spam is not None
    assert spam["state"] == "held"
    resolved = await client.post(f"/v1/queue/{spam['id']}/resolve", json={"reason": "spam"}, headers=mod)
    assert resolved.status_code == 200, resolved.text
    await quiet(client)
    assert forum.post(other).deleted_at is not None
    assert len(forum.calls("DELETE", rf"/posts/{other}\.json")) == 1
    assert {d["state"] for d in await deliveries(client)} == {"delivered"}


async def test_a_post_already_in_the_wanted_state_counts_as_done(
    client: httpx.AsyncClient, forum: FakeDiscourse
) -> None:
    secret = await routed_source(client, forum)  # reject_as: hide
    mod = await responder_headers(client, "mod1")
    topic = story(forum)
    post = forum.create_post(topic, "sam", "Get cheap watches at example.com, why not?", reply_to=1)
    forum.post(post).hidden = True  # Discourse's own flaggers were faster
    assert (await deliver(client, secret, forum.event("post_created", post))).status_code == 202
    await drain(client)
    held = await item_of(client, f"{topic}:2")
    assert held is not None
    await quiet(client)
    rejected = await client.post(f"/v1/queue/{held['id']}/resolve", json={"reason": "spam"}, headers=mod)
    assert rejected.status_code == 200, rejected.text
    await quiet(client)
    assert forum.calls("POST", "/post_actions.json") == []  # hidden already: held, and rejected as hidden
    assert {(d["kind"], d["state"]) for d in await deliveries(client)} == {
        ("comment.held", "delivered"),
        ("comment.rejected", "delivered"),
    }
