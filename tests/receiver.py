"""A real HTTP receiver for tests of what Switchboard sends: it records every request and answers as scripted.

    with Receiver(external_id=lambda request: f"p-{request.json()['data']['reply']['id']}") as receiver:
        receiver.script(500, 500, 500)                    # the next three requests fail, then the default (200)
        receiver.script(Answer(429, {"Retry-After": "2"}))
        receiver.script(404, when=lambda r: r.json()["type"] == "comment.held")
        receiver.down()                                     # connections are refused ...
        receiver.up()                                       # ... until it listens again, on the same port

It listens on 127.0.0.1 (a port the system picks, kept across `down` / `up`), serves each request in its own thread
and closes the connection after each answer (HTTP/1.0), so going down leaves no kept-alive connection behind.
Everything it holds is guarded by one lock: tests read `requests` while the server threads write.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

Match = Callable[["Received"], bool]


@dataclass(frozen=True, slots=True)
class Received:
    """One request as it arrived."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    monotonic: float  # time.monotonic() on arrival
    wall: datetime  # the wall clock (UTC) on arrival
    status: int  # what the receiver answered

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str | None:
        """The Standard Webhooks `webhook-id` header (the idempotency key)."""
        return self.headers.get("webhook-id")

    @property
    def type(self) -> str | None:
        """The event's `type`, when the body is a JSON object that has one."""
        try:
            document = self.json()
        except ValueError:
            return None
        kind = document.get("type") if isinstance(document, dict) else None
        return kind if isinstance(kind, str) else None


@dataclass(frozen=True, slots=True)
class Answer:
    """How to answer one request."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # None: `{"external_id": ...}` on 2xx when the receiver gives ids, else empty


@dataclass(slots=True)
class _Rule:
    answer: Answer
    when: Match | None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # `up` binds the same port again while closed connections linger in TIME_WAIT
    request_queue_size = 256  # socketserver's default backlog of 5 resets connections under a burst of deliveries
    receiver: Receiver


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: nothing stays open when the receiver goes down

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        status, headers, payload = self.server.receiver._record(
            method=self.command,
            path=self.path,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
        )
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        if payload:
            self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload)

    do_POST = do_PUT = do_GET = do_DELETE = do_PATCH = _handle  # noqa: N815  (http.server's naming)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads `requests` instead."""


class Receiver:
    """An HTTP server on loopback that records what it is sent and answers as scripted (default: 200)."""

    def __init__(
        self,
        *,
        default: Answer | int = 200,
        external_id: Callable[[Received], str | None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._default = default if isinstance(default, Answer) else Answer(default)
        self._external_id = external_id
        self._rules: list[_Rule] = []
        self._requests: list[Received] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # ---- lifecycle ------------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.up()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.down()

    @property
    def port(self) -> int:
        """The port it listens on (the same after `down` and `up`)."""
        if not self._port:
            raise RuntimeError("the receiver has not started")
        return self._port

    @property
    def url(self) -> str:
        """Its base URL; the path is recorded, so any path under it works."""
        return f"http://127.0.0.1:{self.port}/callback"

    @property
    def listening(self) -> bool:
        """True while it accepts connections."""
        return self._server is not None

    def up(self) -> None:
        """Listen (again, on the same port once it had one)."""
        if self._server is not None:
            return
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.receiver = self
        self._port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.name = f"receiver-{self._port}"
        thread.start()
        self._server, self._thread = server, thread

    def down(self) -> None:
        """Stop listening: connections to the port are refused until `up`."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    # ---- scripting ------------------------------------------------------------------------------------------

    def script(self, *answers: Answer | int, when: Match | None = None) -> None:
        """Answer the next matching requests with these, in order (then the default again)."""
        with self._lock:
            for answer in answers:
                self._rules.append(_Rule(answer if isinstance(answer, Answer) else Answer(answer), when))

    def scripted(self) -> int:
        """Scripted answers not used yet."""
        with self._lock:
            return len(self._rules)

    # ---- what arrived ---------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[Received]:
        """Every request so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    def of_type(self, kind: str) -> list[Received]:
        """The requests whose body's `type` is `kind`."""
        return [r for r in self.requests if r.type == kind]

    def clear(self) -> None:
        """Forget the requests recorded so far."""
        with self._lock:
            self._requests.clear()

    def _record(
        self, *, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        monotonic, wall = time.monotonic(), datetime.now(UTC)
        probe = Received(method, path, headers, body, monotonic, wall, 0)
        with self._lock:
            answer = self._default
            for position, rule in enumerate(self._rules):
                if _matches(rule.when, probe):
                    answer = self._rules.pop(position).answer
                    break
            payload = answer.body
            if payload is None:
                payload = b""
                if 200 <= answer.status < 300 and self._external_id is not None:
                    given = self._external_id(probe)
                    if given is not None:
                        payload = json.dumps({"external_id": given}).encode()
            self._requests.append(Received(method, path, headers, body, monotonic, wall, answer.status))
        return answer.status, answer.headers, payload


def _matches(when: Match | None, request: Received) -> bool:
    """A rule without a condition matches everything; a condition that cannot read the request matches nothing."""
    if when is None:
        return True
    try:
        return when(request)
    except Exception:  # e.g. a JSON condition on a body that is not JSON: not this rule's request
        return False
