"""RFC 9457 problem+json: the error schema, its OpenAPI declaration, the exception handlers and the last resort.

Problem `type`s are URNs (`urn:switchboard:problem:<code>`): stable names the project owns, listed with their
meaning in docs/errors.md, not addresses of a web site. Every response carries `X-Request-ID` (the caller's, when
it sends a sane one), and every problem body repeats it as `request_id`, so that a user's report finds the log
line. Anything unforeseen answers 500 `internal` as problem+json, never internals; the log has the traceback.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs
from service.errors import SwitchboardError

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:switchboard:problem:"
REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class Problem(BaseModel):
    """An RFC 9457 problem document; `code` is the stable, machine-readable error code."""

    type: str = Field(description="A URN naming the problem type: `urn:switchboard:problem:<code>`.")
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable error code, e.g. invalid_signature, not_found, validation_error.")
    instance: str | None = None
    errors: list[dict[str, Any]] | None = Field(None, description="Field errors, for validation problems.")
    request_id: str | None = Field(None, description="The request's id (also in `X-Request-ID` and the logs).")


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entry declaring problem+json for each status."""
    return {status: {"description": HTTPStatus(status).phrase} for status in statuses}


def rate_limited_response() -> dict[str, Any]:
    """OpenAPI response entry for 429, with its Retry-After header."""
    return {
        "description": HTTPStatus.TOO_MANY_REQUESTS.phrase,
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before the next request can succeed.",
                "schema": {"type": "integer"},
            }
        },
    }


def document_problems(app: FastAPI) -> None:
    """Make the OpenAPI document say what the handlers do: every 4xx/5xx answer is problem+json."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                if operation.get("security") and "429" not in operation.get("responses", {}):
                    # Every route behind an API key is rate-limited per key (routers.deps.get_principal).
                    operation["responses"]["429"] = rate_limited_response()
                for status, response in operation.get("responses", {}).items():
                    if status[0] in "45":
                        response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
                        if status == "422":
                            response["description"] = "Validation Error"
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for operations in document.get("paths", {}).values():
            for operation in operations.values():  # schemas of bodies documented by hand (openapi_extra)
                schemas.update(operation.pop("x-component-schemas", {}))
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def problem(
    request: Request,
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem+json response (with `headers` added, e.g. Retry-After)."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": request.url.path,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    body["request_id"] = request_id_of(request.scope)
    request.state.problem_code = code  # for the metrics middleware (refused webhooks by reason)
    all_headers = dict(headers or {})
    if status == 401 and code == "unauthenticated":
        all_headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=all_headers or None)


def install(app: FastAPI) -> None:
    """Render every error the app can raise as problem+json, and document it so."""
    document_problems(app)

    @app.exception_handler(SwitchboardError)
    async def _switchboard_error(request: Request, exc: SwitchboardError) -> JSONResponse:
        return problem(
            request,
            status=exc.status,
            code=exc.code,
            title=exc.title,
            detail=exc.detail,
            headers=exc.headers,
            **exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        return problem(
            request,
            status=422,
            code="validation_error",
            title="The request is not valid",
            detail="; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)[:1000],
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        phrase = HTTPStatus(exc.status_code).phrase
        if exc.status_code == 405:  # the router names only the first route that matched the path
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(allowed_methods(app, request.url.path)))}
        return problem(
            request,
            status=exc.status_code,
            code=codes.get(exc.status_code, phrase.lower().replace(" ", "_")),
            title=phrase,
            detail=str(exc.detail),
            headers=exc.headers,  # e.g. Allow on 405
        )

    app.add_middleware(LastResort)


def _routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's lazily included routers
        yield from _routes(included.routes) if included is not None else (route,)


def allowed_methods(app: FastAPI, path: str) -> set[str]:
    """Every method some route answers on this path (for 405's Allow header)."""
    methods: set[str] = set()
    for route in _routes(app.routes):
        if isinstance(route, Route | APIRoute) and route.methods and route.path_regex.match(path):
            methods |= route.methods
    return methods


def request_id_of(scope: Scope) -> str | None:
    """The id LastResort gave this request (None outside it)."""
    request_id: str | None = scope.get("state", {}).get("request_id")
    return request_id


class LastResort:
    """Outermost app middleware: tags each request with an id, and turns any unhandled error into problem+json.

    Pure ASGI (not BaseHTTPMiddleware) so that streaming and background tasks are untouched. An exception raised
    after the response started cannot be answered any more; it is logged with the request id and swallowed.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        request_id = given if _SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def tagged(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            with logs.request_context(request_id):  # every log line of this request carries its id
                await self.app(scope, receive, tagged)
        except Exception:
            log.exception(
                "unhandled error in %s %s [request_id=%s]", scope.get("method"), scope.get("path"), request_id,
                extra={"request_id": request_id},
            )  # fmt: skip
            if started:
                return
            body = Problem(
                type=PROBLEM_TYPE_PREFIX + "internal",
                title="Internal error",
                status=500,
                detail=f"Something went wrong on our side; quote request id {request_id} when reporting it.",
                code="internal",
                instance=scope.get("path"),
                request_id=request_id,
            ).model_dump_json(exclude_none=True)
            response = Response(
                content=body, status_code=500, media_type=PROBLEM_MEDIA_TYPE, headers={"Cache-Control": "no-store"}
            )
            await response(scope, receive, tagged)
