"""Every error the API can answer with, rendered as RFC 9457 problem+json by one handler.

    SwitchboardError (500 internal)
    ├── BadRequest (400 bad_request)
    │   ├── ClientClosedRequest (400 client_disconnected: the client left before sending its body)
    │   └── InvalidPayload (422 invalid_payload)
    │       └── InvalidCursor (422 invalid_cursor: a page cursor this API did not return)
    ├── Unauthenticated (401 unauthenticated)
    │   └── InvalidSignature (401 invalid_signature)
    ├── Forbidden (403 forbidden)
    ├── NotFound (404 not_found)
    ├── Conflict (409 conflict)
    │   ├── AlreadyExists (409 already_exists)
    │   ├── InvalidState (409 invalid_state)
    │   └── ItemAlreadyClaimed (409 item_already_claimed)
    ├── PayloadTooLarge (413 payload_too_large)
    ├── UnsupportedMediaType (415 unsupported_media_type)
    ├── RateLimited (429 rate_limited, with a Retry-After header)
    └── NotReady (503 not_ready)

Request-validation failures from FastAPI render as 422 `validation_error`; unknown routes as 404 `not_found`,
wrong methods as 405 `method_not_allowed`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from classifiers.pii import redact

MAX_SUMMARY_LENGTH = 300


def summarise(exc: BaseException) -> str:
    """What may be stored about a failure: its class and the first line of its message, redacted and short.

    Never a traceback (file paths) and never a driver's SQL parameters or detail lines, which can carry comment
    text; the full traceback goes to the log only. A wrapped driver error (SQLAlchemy's `orig`) is named too.
    """
    cause = getattr(exc, "orig", None) if hasattr(exc, "statement") else None
    inner = cause if isinstance(cause, BaseException) else exc
    lines = str(inner).strip().splitlines()
    message = redact(lines[0]) if lines else ""
    name = type(exc).__name__ if inner is exc else f"{type(exc).__name__} ({type(inner).__name__})"
    return f"{name}: {message}"[:MAX_SUMMARY_LENGTH] if message else name


class SwitchboardError(Exception):
    """Base error. `status` and `code` travel with the error; `code` is stable for clients."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra

    @property
    def headers(self) -> dict[str, str]:
        """Response headers the error needs besides its body (e.g. Retry-After)."""
        return {}


class BadRequest(SwitchboardError):
    status = 400
    code = "bad_request"
    title = "Bad request"


class ClientClosedRequest(BadRequest):
    code = "client_disconnected"
    title = "The client closed the connection"


class InvalidPayload(BadRequest):
    status = 422
    code = "invalid_payload"
    title = "The request is not valid"


class InvalidCursor(InvalidPayload):
    code = "invalid_cursor"
    title = "The cursor is not one this API returned"


class Unauthenticated(SwitchboardError):
    status = 401
    code = "unauthenticated"
    title = "A valid API key is required"


class InvalidSignature(Unauthenticated):
    code = "invalid_signature"
    title = "The webhook signature could not be verified"


class Forbidden(SwitchboardError):
    status = 403
    code = "forbidden"
    title = "This API key may not do that"


class NotFound(SwitchboardError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(SwitchboardError):
    status = 409
    code = "conflict"
    title = "Conflict"


class AlreadyExists(Conflict):
    code = "already_exists"
    title = "Already exists"


class InvalidState(Conflict):
    code = "invalid_state"
    title = "Not possible in the current state"


class ItemAlreadyClaimed(Conflict):
    code = "item_already_claimed"
    title = "Someone else holds this item"


class PayloadTooLarge(SwitchboardError):
    status = 413
    code = "payload_too_large"
    title = "The request body is too large"


class UnsupportedMediaType(SwitchboardError):
    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


class RateLimited(SwitchboardError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: int, **extra: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extra)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        """Retry-After: whole seconds until a request would be allowed again."""
        return {"Retry-After": str(self.retry_after)}


class NotReady(SwitchboardError):
    status = 503
    code = "not_ready"
    title = "A dependency is not reachable"
