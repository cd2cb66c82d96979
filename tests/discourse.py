"""A small local Discourse for tests: the part of its REST API that Switchboard uses, and its signed webhooks.

    with FakeDiscourse() as forum:
        forum.add_user("switchboard", staff=True)
        key = forum.add_key()                                     # an "All users" key (add_key("x"): one user's)
        topic = forum.create_topic("olga", "Shuttle bus timetable", category=(5, "facilities"))
        post = forum.create_post(topic, "sam", "Will the bus run during the strike?", reply_to=1)
        event = forum.event("post_created", post)                  # the payload, built once, as Discourse does
        body, headers = event.delivery(secret)                     # each call: a new X-Discourse-Event-Id
        forum.script(rate_limited(30), when=lambda r: r.path == "/posts.json")
        forum.requests                                             # what Switchboard asked, in order

What it answers, as Discourse does (read in discourse/discourse, the files named):

- authentication (`lib/auth/default_current_user_provider.rb`): `Api-Key` and `Api-Username`; a key for all users
  acts as the user named (case-insensitive); a single user's key acts as that user when the header is absent or
  names them, and anything else is 403 `invalid_access`;
- `POST /posts.json {topic_id, raw, reply_to_post_number}` (`PostsController#create`): the post as JSON, 200; 422
  when `raw` is shorter than 20 characters once HTML comments are stripped (`StrippedLengthValidator`); for a user
  whose posts need approval, `{"action": "enqueued", "pending_post": ..., "success": true}` (then `approve`);
- `GET /posts/by_number/<topic>/<n>.json` (the post, deleted ones included for staff; 404 `not_found`);
- `GET /t/<topic>/posts.json?post_number=<n>&asc=true&include_raw=true` (`TopicsController#posts`: up to 20 posts
  after post n, `raw` only when asked);
- `POST /post_actions.json {id, post_action_type_id, take_action}` (`PostActionsController#create`,
  `PostActionCreator`): a staff flag with `take_action == "true"` of an auto-action type (off-topic 3,
  inappropriate 4, spam 8) hides the post; a second flag by the same user is 403;
- `PUT /posts/<id>/unhide` (staff) and `DELETE /posts/<id>.json` (staff; a post already deleted is 403 here, an
  assumption: Switchboard reads the post back either way).

Webhooks (`app/jobs/regular/emit_web_hook_event.rb`, `app/serializers/web_hook_post_serializer.rb`): the body is
`{"post": {...}}` (or `{"ping": "OK"}`) serialised once when the event happens; every delivery of it carries
`X-Discourse-Event`, `X-Discourse-Event-Type`, `X-Discourse-Event-Id` (a new one per automatic retry;
`delivery(secret, event_id=n)` keeps one, as the admin's "Redeliver" does), `X-Discourse-Instance` and
`X-Discourse-Event-Signature: sha256=<hex HMAC-SHA256(secret, body)>`. The JSON escapes `<`, `>` and `&` as
ActiveSupport's encoder does (whether Discourse's MultiJson/Oj does too is not known here; the signature covers
whatever bytes are sent, and the escaped form shows the parser does not depend on either).

Scripted answers (`script`) replace the next matching request's answer; `Answer(..., perform=True)` does the work
first and then answers as scripted (an answer lost on the way back).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import itertools
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

MIN_POST_LENGTH = 20  # SiteSetting.min_post_length
TOPIC_CHUNK = 20  # TopicView.chunk_size
AUTO_ACTION_FLAGS = {3, 4, 8}  # off_topic, inappropriate, spam
INSTANCE = "https://forum.example"

Match = Callable[["Request"], bool]


@dataclass(frozen=True, slots=True)
class Request:
    """One request as it arrived."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    body: bytes
    status: int = 0  # what was answered

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class Answer:
    """A scripted answer."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    perform: bool = False  # do the work first, then answer this (the real answer is lost)


def rate_limited(seconds: int, *, header: bool = True) -> Answer:
    """Discourse's 429 (`RateLimiter::LimitExceeded`): `Retry-After` and `extras.wait_seconds`."""
    body = {
        "errors": [f"You've performed this action too many times. Please wait {seconds} seconds before trying again."],
        "error_type": "rate_limit",
        "extras": {"wait_seconds": seconds, "time_left": f"{seconds} seconds"},
    }
    return Answer(429, {"Retry-After": str(seconds)} if header else {}, body)


@dataclass(slots=True)
class User:
    id: int
    username: str
    name: str
    staff: bool = False
    needs_approval: bool = False


@dataclass(slots=True)
class Topic:
    id: int
    title: str
    slug: str
    category_id: int | None
    category_slug: str | None
    archetype: str = "regular"
    highest_post_number: int = 0


@dataclass(slots=True)
class Post:
    id: int
    topic_id: int
    post_number: int
    user: User
    raw: str
    reply_to_post_number: int | None
    created_at: datetime
    updated_at: datetime
    post_type: int = 1
    version: int = 1
    hidden: bool = False
    deleted_at: datetime | None = None
    user_deleted: bool = False
    flagged_by: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One webhook event: its body built once; `delivery` gives each attempt's headers."""

    name: str
    kind: str
    body: bytes
    forum: FakeDiscourse

    def delivery(self, secret: str | None, *, event_id: int | None = None) -> tuple[bytes, dict[str, str]]:
        """The body and headers of one attempt (a new event id unless `event_id` is given, as a redelivery)."""
        headers = {
            "Accept": "*/*",
            "Content-Type": "application/json",
            "User-Agent": "Discourse/3.4.0",
            "X-Discourse-Instance": INSTANCE,
            "X-Discourse-Event-Id": str(event_id if event_id is not None else self.forum.next_event_id()),
            "X-Discourse-Event-Type": self.kind,
            "X-Discourse-Event": self.name,
        }
        if secret:
            headers["X-Discourse-Event-Signature"] = "sha256=" + signature(secret, self.body)
        return self.body, headers


def signature(secret: str, body: bytes) -> str:
    """`OpenSSL::HMAC.hexdigest("sha256", secret, body)`."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def rails_json(document: Any) -> bytes:
    """Compact JSON with `<`, `>`, `&` escaped, as Rails' encoder writes them (only strings can hold them)."""
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def timestamp(value: datetime | None) -> str | None:
    """A Rails time in JSON: milliseconds, `Z`."""
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    forum: FakeDiscourse


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
        )
        status, headers, payload = self.server.forum.answer(request)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        if payload:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.end_headers()
        self.wfile.write(payload)

    do_POST = do_PUT = do_GET = do_DELETE = _handle  # noqa: N815  (http.server's naming)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `requests`."""


class _Refused(Exception):
    def __init__(self, status: int, errors: list[str], error_type: str | None = None) -> None:
        super().__init__(errors)
        self.status, self.errors, self.error_type = status, errors, error_type


_NOT_FOUND = _Refused(404, ["The requested URL or resource could not be found."], "not_found")
_NO_ACCESS = _Refused(403, ["You are not permitted to view the requested resource."], "invalid_access")
_BAD_CREDENTIALS = _Refused(
    403,
    ["You are not permitted to view the requested resource. The API username or key is invalid."],
    "invalid_access",
)


class FakeDiscourse:
    """A Discourse on 127.0.0.1 (a port the system picks) holding users, topics and posts in memory."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._users: dict[str, User] = {}
        self._keys: dict[str, str | None] = {}
        self._topics: dict[int, Topic] = {}
        self._posts: dict[int, Post] = {}
        self._pending: dict[int, tuple[User, dict[str, Any]]] = {}
        self._rules: list[tuple[Answer, Match | None]] = []
        self._requests: list[Request] = []
        self._ids = itertools.count(1001)
        self._event_ids = itertools.count(1)
        self._last_time = datetime.now(UTC).replace(microsecond=0)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.forum = self
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        """The base URL (what a source's `base_url` is set to)."""
        assert self._server is not None, "the forum has not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ---- the forum's content --------------------------------------------------------------------------------

    def _now(self) -> datetime:
        """Now, in whole milliseconds, strictly after the last time handed out (edits never share a time)."""
        now = datetime.now(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        self._last_time = max(now, self._last_time + timedelta(milliseconds=1))
        return self._last_time

    def add_user(self, username: str, *, name: str | None = None, staff: bool = False) -> User:
        """A user (`staff`: a moderator)."""
        with self._lock:
            user = User(id=len(self._users) + 1, username=username, name=name or username.title(), staff=staff)
            self._users[username.lower()] = user
            return user

    def add_key(self, username: str | None = None) -> str:
        """An API key: for all users (None), or for one user."""
        with self._lock:
            key = hashlib.sha256(f"key-{len(self._keys)}".encode()).hexdigest()
            self._keys[key] = username.lower() if username else None
            return key

    def require_approval(self, username: str) -> None:
        """This user's new posts wait in the review queue."""
        with self._lock:
            self._users[username.lower()].needs_approval = True

    def create_topic(
        self, username: str, title: str, raw: str = "What do you think about this?", *, category: tuple[int, str]
    ) -> int:
        """A topic with its opening post (post number 1); returns the topic id."""
        with self._lock:
            topic = Topic(
                id=next(self._ids),
                title=title,
                slug=re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-"),
                category_id=category[0],
                category_slug=category[1],
            )
            self._topics[topic.id] = topic
            self._add_post(topic, self._users[username.lower()], raw, None)
            return topic.id

    def create_post(
        self, topic_id: int, username: str, raw: str, *, reply_to: int | None = None, post_type: int = 1
    ) -> int:
        """A post in the topic; returns its id."""
        with self._lock:
            return self._add_post(self._topics[topic_id], self._users[username.lower()], raw, reply_to, post_type).id

    def _add_post(self, topic: Topic, user: User, raw: str, reply_to: int | None, post_type: int = 1) -> Post:
        topic.highest_post_number += 1
        now = self._now()
        post = Post(
            id=next(self._ids),
            topic_id=topic.id,
            post_number=topic.highest_post_number,
            user=user,
            raw=raw.strip(),
            reply_to_post_number=reply_to,
            created_at=now,
            updated_at=now,
            post_type=post_type,
        )
        self._posts[post.id] = post
        return post

    def edit(self, post_id: int, raw: str, *, new_version: bool = True) -> None:
        """Revise a post (`new_version=False`: an edit within the grace period, which keeps the version)."""
        with self._lock:
            post = self._posts[post_id]
            post.raw, post.updated_at = raw, self._now()
            post.version += 1 if new_version else 0

    def delete_as_author(self, post_id: int) -> None:
        """The author deletes their post (`PostDestroyer#mark_for_deletion`)."""
        with self._lock:
            post = self._posts[post_id]
            post.raw = "(post deleted by author)"
            post.user_deleted, post.updated_at = True, self._now()
            post.version += 1

    def destroy(self, post_id: int) -> None:
        """A moderator deletes the post (`PostDestroyer#perform_delete`: a soft delete)."""
        with self._lock:
            self._posts[post_id].deleted_at = self._now()

    def recover(self, post_id: int) -> None:
        """A deleted post comes back."""
        with self._lock:
            post = self._posts[post_id]
            post.deleted_at, post.user_deleted = None, False

    def approve(self, pending_id: int) -> int:
        """A moderator approves a queued post; returns the new post's id."""
        with self._lock:
            user, params = self._pending.pop(pending_id)
            topic = self._topics[int(params["topic_id"])]
            return self._add_post(topic, user, str(params["raw"]), params.get("reply_to_post_number")).id

    def post(self, post_id: int) -> Post:
        """A post as the forum has it now."""
        with self._lock:
            return self._posts[post_id]

    def posts(self, topic_id: int) -> list[Post]:
        """The topic's posts, in order."""
        with self._lock:
            return sorted((p for p in self._posts.values() if p.topic_id == topic_id), key=lambda p: p.post_number)

    def pending(self) -> list[int]:
        """Ids of posts waiting for approval."""
        with self._lock:
            return list(self._pending)

    # ---- webhooks -------------------------------------------------------------------------------------------

    def next_event_id(self) -> int:
        with self._lock:
            return next(self._event_ids)

    def serialized(self, post_id: int) -> dict[str, Any]:
        """The post as `WebHookPostSerializer` writes it (for the system user: staff fields included)."""
        with self._lock:
            post = self._posts[post_id]
            topic = self._topics[post.topic_id]
            visible = [p for p in self._posts.values() if p.topic_id == topic.id and not p.user_deleted]
            cooked = html.escape(re.sub(r"<!--.*?-->", "", post.raw, flags=re.DOTALL).strip())
            reply_to = next((p.user for p in visible if p.post_number == post.reply_to_post_number), None)
            return {
                "id": post.id, "name": post.user.name, "username": post.user.username,
                "avatar_template": f"/letter_avatar_proxy/v4/letter/{post.user.username[0]}/{{size}}.png",
                "created_at": timestamp(post.created_at), "cooked": f"<p>{cooked}</p>",
                "post_number": post.post_number, "post_type": post.post_type,
                "updated_at": timestamp(post.updated_at), "reply_count": 0,
                "reply_to_post_number": post.reply_to_post_number, "quote_count": 0, "incoming_link_count": 0,
                "reads": 1, "score": 0, "topic_id": topic.id, "topic_slug": topic.slug, "topic_title": topic.title,
                "topic_html_title": html.escape(topic.title), "category_id": topic.category_id,
                "display_username": post.user.name, "primary_group_name": None, "version": post.version,
                "user_title": None,
                "reply_to_user": None if reply_to is None else {
                    "username": reply_to.username, "name": reply_to.name, "avatar_template": ""
                },
                "bookmarked": False, "raw": post.raw, "moderator": post.user.staff, "admin": False,
                "staff": post.user.staff, "user_id": post.user.id, "hidden": post.hidden,
                "trust_level": 1, "deleted_at": timestamp(post.deleted_at), "user_deleted": post.user_deleted,
                "edit_reason": None, "wiki": False, "reviewable_id": None,
                "topic_posts_count": len(visible),
                "topic_filtered_posts_count": len([p for p in visible if p.post_type == 1]),
                "topic_archetype": topic.archetype, "category_slug": topic.category_slug,
            }  # fmt: skip

    def event(self, name: str, post_id: int) -> WebhookEvent:
        """A post event (`post_created`, `post_edited`, `post_destroyed`, `post_recovered`), its payload built now."""
        return WebhookEvent(name=name, kind="post", body=rails_json({"post": self.serialized(post_id)}), forum=self)

    def ping(self) -> WebhookEvent:
        """The admin's "Ping" button."""
        return WebhookEvent(name="ping", kind="ping", body=rails_json({"ping": "OK"}), forum=self)

    # ---- the REST API ---------------------------------------------------------------------------------------

    def script(self, *answers: Answer, when: Match | None = None) -> None:
        """Answer the next matching requests with these, in order."""
        with self._lock:
            self._rules.extend((answer, when) for answer in answers)

    @property
    def requests(self) -> list[Request]:
        """Every API request so far, in order (a copy)."""
        with self._lock:
            return list(self._requests)

    def calls(self, method: str, path_pattern: str) -> list[Request]:
        """The requests with this method whose path matches the pattern (a regular expression, whole path)."""
        return [r for r in self.requests if r.method == method and re.fullmatch(path_pattern, r.path)]

    def answer(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            scripted = None
            for position, (scripted_answer, when) in enumerate(self._rules):
                if when is None or when(request):
                    scripted = scripted_answer
                    del self._rules[position]
                    break
            status, headers, document = 200, {}, None
            if scripted is None or scripted.perform:
                try:
                    document = self._route(request)
                except _Refused as refused:
                    status = refused.status
                    document = {"errors": refused.errors, "error_type": refused.error_type}
            if scripted is not None:
                status, headers = scripted.status, scripted.headers
                document = scripted.body if scripted.body is not None else {"errors": [f"HTTP {status}"]}
            self._requests.append(
                Request(request.method, request.path, request.query, request.headers, request.body, status)
            )
            return status, headers, b"" if document is None else json.dumps(document).encode()

    def _acting_user(self, request: Request) -> User:
        key = request.headers.get("api-key")
        if key is None or key not in self._keys:
            raise _BAD_CREDENTIALS
        named = request.headers.get("api-username")
        bound = self._keys[key]
        if bound is not None:
            if named is not None and named.lower() != bound:
                raise _BAD_CREDENTIALS
            return self._users[bound]
        if named is None or named.lower() not in self._users:
            raise _BAD_CREDENTIALS
        return self._users[named.lower()]

    def _route(self, request: Request) -> dict[str, Any] | None:
        user = self._acting_user(request)
        method, path = request.method, request.path
        if method == "POST" and path == "/posts.json":
            return self._create_post(user, request.json())
        if method == "GET" and (found := re.fullmatch(r"/posts/by_number/(\d+)/(\d+)\.json", path)):
            post = self._by_number(int(found.group(1)), int(found.group(2)), user)
            return self._post_json(post, raw=True)
        if method == "GET" and (found := re.fullmatch(r"/t/(\d+)/posts\.json", path)):
            return self._topic_posts(int(found.group(1)), request.query, user)
        if method == "POST" and path == "/post_actions.json":
            return self._flag(user, request.json())
        if method == "PUT" and (found := re.fullmatch(r"/posts/(\d+)/unhide", path)):
            post = self._staff_post(user, int(found.group(1)))
            post.hidden = False
            return None
        if method == "DELETE" and (found := re.fullmatch(r"/posts/(\d+)\.json", path)):
            post = self._staff_post(user, int(found.group(1)))
            if post.deleted_at is not None:
                raise _NO_ACCESS
            post.deleted_at = self._now()
            return None
        raise _NOT_FOUND

    def _staff_post(self, user: User, post_id: int) -> Post:
        post = self._posts.get(post_id)
        if post is None or (post.deleted_at is not None and not user.staff):
            raise _NOT_FOUND
        if not user.staff:
            raise _NO_ACCESS
        return post

    def _by_number(self, topic_id: int, number: int, user: User) -> Post:
        for post in self._posts.values():
            if post.topic_id == topic_id and post.post_number == number:
                if post.deleted_at is not None and not user.staff:
                    break
                return post
        raise _NOT_FOUND

    def _post_json(self, post: Post, *, raw: bool) -> dict[str, Any]:
        document = self.serialized(post.id)
        for name in ("topic_posts_count", "topic_filtered_posts_count", "topic_archetype", "category_slug"):
            document.pop(name)  # only the webhook serializer adds these
        if not raw:
            document.pop("raw")
        return document

    def _create_post(self, user: User, params: dict[str, Any]) -> dict[str, Any]:
        raw = str(params.get("raw") or "")
        topic = self._topics.get(int(params.get("topic_id") or 0))
        if topic is None:
            raise _Refused(422, ["Topic not found"])
        if len(re.sub(r"<!--(.*?)-->", "", raw).strip()) < MIN_POST_LENGTH:
            raise _Refused(422, [f"Body is too short (minimum is {MIN_POST_LENGTH} characters)"])
        if user.needs_approval:
            pending_id = next(self._ids)
            self._pending[pending_id] = (user, params)
            return {
                "action": "enqueued", "pending_post": {"id": pending_id, "raw": raw},
                "pending_count": len(self._pending), "success": True,
            }  # fmt: skip
        post = self._add_post(topic, user, raw, params.get("reply_to_post_number"))
        return self._post_json(post, raw=True)

    def _topic_posts(self, topic_id: int, query: dict[str, list[str]], user: User) -> dict[str, Any]:
        if topic_id not in self._topics:
            raise _NOT_FOUND
        after = int(query.get("post_number", ["0"])[0])
        ascending = query.get("asc", ["false"])[0] == "true"
        posts = [p for p in self.posts(topic_id) if p.deleted_at is None or user.staff]
        posts = [p for p in posts if p.post_number > after] if ascending else posts
        with_raw = bool(query.get("include_raw", [""])[0])
        return {
            "post_stream": {"posts": [self._post_json(p, raw=with_raw) for p in posts[:TOPIC_CHUNK]]},
            "id": topic_id,
        }

    def _flag(self, user: User, params: dict[str, Any]) -> dict[str, Any]:
        post = self._posts.get(int(params.get("id") or 0))
        if post is None:
            raise _NOT_FOUND
        if user.id in post.flagged_by:
            raise _Refused(403, ["You have already performed this action."])
        post.flagged_by.add(user.id)
        kind = int(params.get("post_action_type_id") or 0)
        if user.staff and params.get("take_action") == "true" and kind in AUTO_ACTION_FLAGS:
            post.hidden = True
        return self._post_json(post, raw=False)
