"""RFC 9457 problem+json: the error schema, its OpenAPI declaration, and the exception handlers."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import SwitchboardError

PROBLEM_MEDIA_TYPE = "application/problem+json"


class Problem(BaseModel):
    """An RFC 9457 problem document; `code` is the stable, machine-readable error code."""

    type: str = Field(description="A URI naming the problem type.")
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable error code, e.g. invalid_signature, not_found, validation_error.")
    instance: str | None = None
    errors: list[dict[str, Any]] | None = Field(None, description="Field errors, for validation problems.")


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
                    # Every route behind an API key is rate-limited per key (service.ratelimit, in get_principal).
                    operation["responses"]["429"] = rate_limited_response()
                for status, response in operation.get("responses", {}).items():
                    if status[0] in "45":
                        response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
                        if status == "422":
                            response["description"] = "Validation Error"
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
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
        "type": f"https://switchboard.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": request.url.path,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
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
        return problem(
            request,
            status=exc.status_code,
            code=codes.get(exc.status_code, phrase.lower().replace(" ", "_")),
            title=phrase,
            detail=str(exc.detail),
        )
