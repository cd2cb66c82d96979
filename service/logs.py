"""Log lines: one JSON object per line (or plain text), each with the request id of the work it belongs to.

The request id lives in a context variable. `routers.problems.LastResort` sets it for each HTTP request (the
caller's `X-Request-ID`, or a new id); a job row written during a request keeps it (`Job.request_id`), and
processing sets it again while it works on that comment, so the worker's lines for a comment carry the id of the
request that brought it in. `configure` is called once per process by the composition root (`switchboard serve`,
`switchboard worker`, the uvicorn factory).

What is logged: ids, counts, states, durations; never comment bodies, API keys, secrets or personal data. As a
net under that rule, a JSON line names an exception by its class and its first line redacted
(`service.errors.summarise`) plus the stack's frames, never the full message, which can quote a comment.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from service.errors import summarise

LogFormat = Literal["json", "text"]

REQUEST_ID: ContextVar[str | None] = ContextVar("switchboard_request_id", default=None)

# Attributes every LogRecord has; whatever else a record carries came from `extra=` and goes into the JSON line.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "request_id"}


def current_request_id() -> str | None:
    """The request id of the work this code runs for (None outside a request or a job that has one)."""
    return REQUEST_ID.get()


@contextmanager
def request_context(request_id: str | None) -> Iterator[None]:
    """Log lines inside the block carry `request_id` (restored afterwards)."""
    token = REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


def _request_id(record: logging.LogRecord) -> str | None:
    given = getattr(record, "request_id", None)  # `extra={"request_id": ...}` wins over the context
    return str(given) if given is not None else REQUEST_ID.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, then any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": _request_id(record),
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_"))
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            entry["error"] = summarise(error)
            causes: list[str] = []
            cause = error.__cause__ or error.__context__
            while cause is not None and len(causes) < 5:
                causes.append(summarise(cause))
                cause = cause.__cause__ or cause.__context__
            if causes:
                entry["caused_by"] = causes
            entry["traceback"] = "".join(traceback.format_tb(error.__traceback__))
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`LEVEL:logger:message [request_id=...]`, for a terminal (tracebacks in full)."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s:%(name)s:%(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        """The line, with the request id when there is one."""
        line = super().formatMessage(record)
        request_id = _request_id(record)
        return f"{line} [request_id={request_id}]" if request_id else line


class _Handler(logging.StreamHandler[TextIO]):
    """The handler `configure` installs (recognised, and replaced, when it is called again)."""


def configure(*, level: str, log_format: LogFormat, stream: TextIO | None = None) -> logging.Handler:
    """Send every log line of this process to `stream` (standard error) in `log_format`, at `level`.

    Safe to call again (it replaces the handler it installed before; handlers others installed stay).
    """
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for chatty in ("httpx", "httpcore"):  # their INFO lines name every URL called, Slack and Teams webhooks included
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
    return handler
