"""The Switchboard connector plugin on a real WordPress (tests/wordpress.py): comment events reach a local receiver
signed with Standard Webhooks (checked by the `standardwebhooks` package), once per change, in order, and survive
an outage of Switchboard through WP-Cron.

One WordPress site serves the whole module (a site takes about two seconds to make); each test has its own post,
its own receiver and an empty queue.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from tests.receiver import Answer, Received, Receiver
from tests.wordpress import WordPressSite, wordpress_site

pytestmark = pytest.mark.slow

SECRET = "whsec_" + base64.b64encode(b"switchboard-wordpress-test-key-0123456789").decode()
SECRET_KEY_TEXT = SECRET.removeprefix("whsec_")
EVENT_FIELDS = {"type", "event_id", "occurred_at", "site", "comment", "post"}
COMMENT_FIELDS = {
    "id",
    "post_id",
    "parent_id",
    "status",
    "content",
    "date_gmt",
    "link",
    "author",
    "switchboard_reply_id",
}
POST_FIELDS = {"id", "title", "link", "type", "categories", "author"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WordPressSite]:
    """One WordPress for the module, with an author, a subscriber and an editor."""
    with wordpress_site(tmp_path_factory.mktemp("wordpress")) as wordpress:
        wordpress.create_user("alice", "author", "Alice O'Brien")
        wordpress.create_user("sam", "subscriber", "Sam Subscriber")
        wordpress.create_user("erin", "editor", "Erin Editor")
        yield wordpress


@pytest.fixture
def receiver(site: WordPressSite) -> Iterator[Receiver]:
    """A receiver the plugin is configured to deliver to; the plugin's queue starts empty."""
    with Receiver() as listening:
        site.clear_queue()
        site.configure_switchboard(listening.url, SECRET)
        yield listening


def deliveries(receiver: Receiver, count: int, timeout: float = 10) -> list[tuple[Received, dict[str, Any]]]:
    """Exactly `count` requests arrived; each one verified with the secret, with its event."""
    deadline = time.monotonic() + timeout
    while len(receiver.requests) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # anything extra (a duplicate) would have arrived by now
    requests = receiver.requests
    assert len(requests) == count, [(r.status, r.json()) for r in requests]
    verified = []
    for request in requests:
        assert request.method == "POST"
        assert request.headers["content-type"] == "application/json"
        verified.append((request, Webhook(SECRET).verify(request.body, request.headers)))
    return verified


def rfc3339_utc(value: str) -> datetime:
    """A `...Z` timestamp; fails on anything else."""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_new_comment_by_a_logged_in_user_arrives_once_signed_with_the_post_and_its_authors(
    site: WordPressSite, receiver: Receiver
) -> None:
    post = site.create_post("alice", "Canteen hours & the night shift", categories=["News", "Facilities"])
    comment = site.post_comment(post, "Will the canteen open earlier?", as_login="sam")

    [(request, event)] = deliveries(receiver, 1)
    shown = site.comment(comment)
    post_shown = site.rest("GET", f"/wp/v2/posts/{post}").json()
    assert re.fullmatch(r"wpc_[A-Za-z0-9]{24,}", request.webhook_id or "")
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    assert set(event) == EVENT_FIELDS
    assert event["type"] == "comment.created"
    assert event["event_id"] == request.webhook_id
    assert abs((rfc3339_utc(event["occurred_at"]) - datetime.now(UTC)).total_seconds()) < 60
    assert event["site"] == {"url": site.url, "name": "Switchboard test site"}
    assert set(event["comment"]) == COMMENT_FIELDS
    assert event["comment"] == {
        "id": str(comment),
        "post_id": str(post),
        "parent_id": None,
        "status": "hold",  # a subscriber's first comment waits for moderation (WordPress's default rules)
        "content": "Will the canteen open earlier?",
        "date_gmt": shown["date_gmt"] + "Z",
        "link": shown["link"],
        "author": {"user_id": str(site.user_id("sam")), "name": "Sam Subscriber", "email": "sam@example.com"},
        "switchboard_reply_id": None,
    }
    assert shown["status"] == "hold"
    assert set(event["post"]) == POST_FIELDS
    assert {**event["post"], "categories": sorted(event["post"]["categories"])} == {
        "id": str(post),
        "title": "Canteen hours & the night shift",
        "link": post_shown["link"],
        "type": "post",
        "categories": ["Facilities", "News"],
        "author": {"user_id": str(site.user_id("alice")), "name": "Alice O'Brien", "email": "alice@example.com"},
    }
    assert site.queue() == []


def test_edits_and_moderation_arrive_as_the_mapped_types_in_order_without_duplicates(
    site: WordPressSite, receiver: Receiver
) -> None:
    post = site.create_post("alice", "Parking changes")
    comment = site.post_comment(post, "Where do visitors park?", as_login="erin")  # an editor's: approved at once
    site.edit_comment(comment, "Where do visitors park now?")
    site.edit_comment(comment, "Where do visitors park now?")  # saved unchanged: nothing to send
    site.set_status(comment, "hold")
    site.set_status(comment, "approved")
    # one request that changes the text and holds the comment: one event
    site.rest(
        "POST", f"/wp/v2/comments/{comment}", json_body={"content": "Visitors: where to park?", "status": "hold"}
    ).raise_for_status()
    site.trash(comment)
    site.set_status(comment, "untrash")
    site.set_status(comment, "spam")
    site.set_status(comment, "unspam")
    site.delete(comment)

    events = [event for _, event in deliveries(receiver, 10)]
    assert [(e["type"], e["comment"]["status"], e["comment"]["content"]) for e in events] == [
        ("comment.created", "approved", "Where do visitors park?"),
        ("comment.updated", "approved", "Where do visitors park now?"),
        ("comment.updated", "hold", "Where do visitors park now?"),
        ("comment.updated", "approved", "Where do visitors park now?"),
        ("comment.updated", "hold", "Visitors: where to park?"),
        ("comment.deleted", "trash", "Visitors: where to park?"),
        ("comment.updated", "hold", "Visitors: where to park?"),  # untrash restores the status it had
        ("comment.deleted", "spam", "Visitors: where to park?"),
        ("comment.updated", "hold", "Visitors: where to park?"),
        ("comment.deleted", "hold", "Visitors: where to park?"),  # deleted for good: its data from before
    ]
    assert {e["comment"]["id"] for e in events} == {str(comment)}
    assert len({e["event_id"] for e in events}) == len(events)
    assert events[-1]["post"]["title"] == "Parking changes"
    assert site.comments(post, status="any") == []


def test_several_changes_in_one_request_arrive_as_separate_events_in_order(
    site: WordPressSite, receiver: Receiver
) -> None:
    post = site.create_post("alice", "Office move")
    comment = site.call(
        """
$id = wp_insert_comment( array( 'comment_post_ID' => $args['post'], 'comment_content' => 'Spam spam spam',
    'comment_author' => 'Bot', 'comment_author_email' => 'bot@example.com', 'comment_approved' => 1 ) );
wp_spam_comment( $id );
return $id;
""",
        post=post,
    )
    events = [event for _, event in deliveries(receiver, 2)]
    assert [(e["type"], e["comment"]["id"], e["comment"]["status"]) for e in events] == [
        ("comment.created", str(comment), "approved"),
        ("comment.deleted", str(comment), "spam"),
    ]


def test_a_guest_comment_is_sent_and_pingbacks_are_not(site: WordPressSite, receiver: Receiver) -> None:
    post = site.create_post("alice", "Summer party")
    comment = site.post_comment(post, "Can families come?", author_name="Gina Guest", author_email="gina@example.com")
    site.call(
        """
wp_insert_comment( array( 'comment_post_ID' => $args['post'], 'comment_type' => 'pingback',
    'comment_content' => 'Linked from elsewhere', 'comment_author' => 'Other blog', 'comment_approved' => 1 ) );
return true;
""",
        post=post,
    )

    [(_, event)] = deliveries(receiver, 1)
    assert event["type"] == "comment.created"
    assert event["comment"]["id"] == str(comment)
    assert event["comment"]["status"] == "hold"
    assert event["comment"]["author"] == {"user_id": None, "name": "Gina Guest", "email": "gina@example.com"}


def test_a_reply_posted_through_the_rest_api_with_a_switchboard_reply_id_arrives_carrying_it(
    site: WordPressSite, receiver: Receiver
) -> None:
    post = site.create_post("alice", "Gym opening hours", categories=["Facilities"])
    question = site.post_comment(post, "Is the gym open on Sundays?", as_login="sam")
    reply_id = str(uuid.uuid4())
    reply = site.post_comment(
        post, "Yes, from 8 to 14.", as_login="erin", parent=question, meta={"switchboard_reply_id": reply_id}
    )
    # a subscriber cannot mark a comment as Switchboard's: WordPress refuses the meta (the comment stays)
    refused = site.rest(
        "POST",
        "/wp/v2/comments",
        as_login="sam",
        json_body={"post": post, "content": "Me too!", "meta": {"switchboard_reply_id": str(uuid.uuid4())}},
    )

    events = [event for _, event in deliveries(receiver, 3)]
    assert events[0]["comment"]["switchboard_reply_id"] is None
    assert events[1]["type"] == "comment.created"
    assert events[1]["comment"]["id"] == str(reply)
    assert events[1]["comment"]["parent_id"] == str(question)
    assert events[1]["comment"]["switchboard_reply_id"] == reply_id
    assert events[1]["comment"]["status"] == "approved"
    assert events[1]["comment"]["author"]["user_id"] == str(site.user_id("erin"))
    assert site.comment(reply)["meta"]["switchboard_reply_id"] == reply_id
    assert refused.status_code == 403
    assert events[2]["comment"]["content"] == "Me too!"
    assert events[2]["comment"]["switchboard_reply_id"] is None


def test_events_made_while_switchboard_is_down_wait_and_wp_cron_delivers_them_in_order_with_their_ids(
    site: WordPressSite, receiver: Receiver
) -> None:
    post = site.create_post("alice", "Network maintenance")
    receiver.down()
    first = site.post_comment(post, "Is the VPN affected?", as_login="erin")
    site.edit_comment(first, "Is the VPN affected too?")
    second = site.post_comment(post, "And e-mail?", as_login="erin")

    queued = site.queue()
    now = time.time()
    assert [(r["comment_id"], r["event_type"], r["status"], r["attempts"]) for r in queued] == [
        (first, "comment.created", "pending", 1),
        (first, "comment.updated", "pending", 0),  # behind the first one: not sent before it
        (second, "comment.created", "pending", 1),
    ]
    assert all(45 <= r["next_attempt_at"] - now <= 65 for r in queued if r["attempts"])  # retried after a minute
    assert re.search(r"refused|connect", queued[0]["last_error"], re.IGNORECASE), queued[0]["last_error"]
    assert site.scheduled()["switchboard_retry_queue"], "a retry is scheduled in WP-Cron"

    receiver.up()
    site.run_cron()  # WP-Cron runs, but the backoff has not passed
    assert receiver.requests == []
    site.run_cron(expire_backoff=True)

    delivered = deliveries(receiver, 3)
    assert {request.webhook_id: request.body.decode() for request, _ in delivered} == {
        row["event_id"]: row["body"] for row in queued
    }
    per_comment = [(e["comment"]["id"], e["type"]) for _, e in delivered if e["comment"]["id"] == str(first)]
    assert per_comment == [(str(first), "comment.created"), (str(first), "comment.updated")]
    assert site.queue() == []


def test_a_bulk_change_while_switchboard_hangs_waits_for_one_timeout_and_leaves_the_rest_to_wp_cron(
    site: WordPressSite, receiver: Receiver
) -> None:
    post = site.create_post("alice", "Spam wave")
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        site.configure_switchboard(f"http://127.0.0.1:{silent.getsockname()[1]}/hook", SECRET, delivery_timeout=1)
        started = time.monotonic()
        site.call("return true;")
        baseline = time.monotonic() - started  # a request that sends nothing
        started = time.monotonic()
        made = site.call(
            """
$ids = array();
foreach ( array( 'One', 'Two', 'Three' ) as $text ) {
    $ids[] = wp_insert_comment( array( 'comment_post_ID' => $args['post'], 'comment_content' => $text,
        'comment_author' => 'Visitor', 'comment_author_email' => 'visitor@example.com', 'comment_approved' => 0 ) );
}
return $ids;
""",
            post=post,
        )
        took = time.monotonic() - started
    queued = site.queue()
    assert [(r["comment_id"], r["attempts"]) for r in queued] == [(made[0], 1), (made[1], 0), (made[2], 0)]
    assert re.search(r"time", queued[0]["last_error"], re.IGNORECASE), queued[0]["last_error"]
    assert took - baseline < 2, f"the request took {took - baseline:.1f} s more: one timeout (1 s), not three"

    site.configure_switchboard(receiver.url, SECRET, delivery_timeout=5)
    site.run_cron(expire_backoff=True)
    delivered = deliveries(receiver, 3)
    assert sorted(event["comment"]["id"] for _, event in delivered) == sorted(str(i) for i in made)
    assert site.queue() == []


def test_a_delivery_answered_503_or_429_is_retried_by_wp_cron_with_the_same_id_and_body(
    site: WordPressSite, receiver: Receiver
) -> None:
    post = site.create_post("alice", "Canteen survey")
    receiver.script(503, Answer(429, {"Retry-After": "600"}))
    comment = site.post_comment(post, "Why no vegan option?", as_login="erin")  # 503
    site.edit_comment(comment, "Why is there no vegan option?")  # waits behind it
    assert len(receiver.requests) == 1
    created, updated = site.queue()
    assert (created["attempts"], updated["attempts"]) == (1, 0)
    assert created["last_error"].startswith("HTTP 503")
    assert 55 <= created["next_attempt_at"] - created["last_attempt_at"] <= 65

    site.run_cron(expire_backoff=True)  # 429, Retry-After 600 s
    created_again, _ = site.queue()
    assert created_again["attempts"] == 2
    assert created_again["next_attempt_at"] - created_again["last_attempt_at"] == 600
    assert len(receiver.requests) == 2

    site.run_cron(expire_backoff=True)  # 200, then the edit behind it
    delivered = deliveries(receiver, 4)
    assert [request.status for request, _ in delivered] == [503, 429, 200, 200]
    assert [request.webhook_id for request, _ in delivered] == [created["event_id"]] * 3 + [updated["event_id"]]
    assert {request.body for request, _ in delivered[:3]} == {created["body"].encode()}
    assert [event["type"] for _, event in delivered] == ["comment.created"] * 3 + ["comment.updated"]
    assert site.queue() == []


def test_an_event_answered_400_is_not_retried_and_shows_as_failed(site: WordPressSite, receiver: Receiver) -> None:
    post = site.create_post("alice", "Holiday calendar")
    receiver.script(Answer(400, body=b'{"code": "invalid_payload", "detail": "unknown field"}'))
    comment = site.post_comment(post, "When is the calendar out?", as_login="erin")
    site.edit_comment(comment, "When is the 2027 calendar out?")  # a failed event does not hold the next back

    [failed] = site.queue()
    assert (failed["status"], failed["attempts"], failed["event_type"]) == ("failed", 1, "comment.created")
    assert failed["last_error"] == "HTTP 400: invalid_payload: unknown field (not retried)"
    site.run_cron(expire_backoff=True)
    delivered = deliveries(receiver, 2)
    assert [(request.status, event["type"]) for request, event in delivered] == [
        (400, "comment.created"),
        (200, "comment.updated"),
    ]

    page = site.admin_page("options-general.php?page=switchboard")
    assert re.search(r'id="switchboard-failed">\s*1\s*<', page)
    assert failed["event_id"] in page
    assert "HTTP 400: invalid_payload: unknown field (not retried)" in page


def test_the_signing_secret_is_shown_masked_and_written_nowhere_but_its_option(
    site: WordPressSite, receiver: Receiver
) -> None:
    post = site.create_post("alice", "Security awareness week")
    receiver.script(503)
    site.post_comment(post, "Is the training mandatory?", as_login="erin")

    page = site.admin_page("options-general.php?page=switchboard")
    assert SECRET_KEY_TEXT not in page
    assert "whsec_••••••••" in page
    assert f'value="{receiver.url}"' in page
    assert re.search(r'id="switchboard-pending">\s*1\s*<', page)
    assert "HTTP 503" in page
    for log in (site.debug_log, site.server_log):
        assert not log.exists() or SECRET_KEY_TEXT not in log.read_text(errors="replace")
    assert SECRET_KEY_TEXT not in json.dumps(site.queue())
    holders = site.call(
        """
global $wpdb;
return $wpdb->get_col( $wpdb->prepare( "SELECT option_name FROM {$wpdb->options} WHERE option_value LIKE %s",
    '%' . $wpdb->esc_like( $args['key'] ) . '%' ) );
""",
        key=SECRET_KEY_TEXT,
    )
    assert holders == ["switchboard_secret"]

    # Saving the form with the secret field left empty keeps the secret; a malformed one is refused.
    with site.admin_session() as admin:
        for secret in ("", "not-a-secret"):
            form = admin.get("/wp-admin/options-general.php?page=switchboard").text
            nonce = re.search(r'name="_wpnonce" value="([^"]+)"', form)
            assert nonce is not None
            saved = admin.post(
                "/wp-admin/options.php",
                data={
                    "option_page": "switchboard",
                    "action": "update",
                    "_wpnonce": nonce.group(1),
                    "_wp_http_referer": "/wp-admin/options-general.php?page=switchboard",
                    "switchboard_url": receiver.url + "/v2",
                    "switchboard_secret": secret,
                    "switchboard_timeout": "7",
                },
            )
            assert saved.status_code == 302
            shown = admin.get(saved.headers["location"]).text
            assert SECRET_KEY_TEXT not in shown
            assert ("The signing secret must be" in shown) == (secret != "")
    options = site.call(
        "return array( get_option( 'switchboard_url' ), get_option( 'switchboard_secret' ),"
        " (int) get_option( 'switchboard_timeout' ) );"
    )
    assert options == [receiver.url + "/v2", SECRET, 7]
    debug = site.debug_log.read_text(errors="replace") if site.debug_log.exists() else ""
    assert "switchboard-connector" not in debug, "the plugin caused PHP notices or warnings"
