"""The edge every request passes before FastAPI parses it: one behaviour for bad input on both databases.

`CheckedRoute` is the route class of every router (`api_router()` builds them; a test checks that no route
escapes). Before dependencies or the handler run, it refuses with 422 `validation_error`, naming the field:
- a NUL character in any path parameter or declared query parameter;
- a JSON body that `service.inputs.parse_json` refuses (syntax, depth, out-of-range numbers, NUL in any key or
  string). FastAPI would answer some of these with an undocumented 400 and crash on others.
Routes without a body model (the webhook receiver) read and check their own bodies after verifying them.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from service.errors import ClientClosedRequest
from service.inputs import InvalidJson, parse_json

NUL_MESSAGE = "Text must not contain NUL characters (U+0000)."


def _nul_error(loc: Iterable[str | int]) -> RequestValidationError:
    return RequestValidationError([{"loc": tuple(loc), "msg": NUL_MESSAGE, "type": "string_nul"}])


def check_request_text(request: Request, query_names: frozenset[str]) -> None:
    """Raise RequestValidationError if a path parameter or a declared query parameter holds a NUL character."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and "\x00" in value:
            raise _nul_error(("path", name))
    for name, value in request.query_params.multi_items():
        if name in query_names and "\x00" in value:  # undeclared parameters are ignored, as FastAPI does
            raise _nul_error(("query", name))


async def check_json_body(request: Request) -> None:
    """Raise RequestValidationError if the body is not JSON that Switchboard accepts (an empty body passes)."""
    try:
        body = await request.body()  # cached on the request: FastAPI reads the same bytes afterwards
    except ClientDisconnect:
        raise ClientClosedRequest("The client closed the connection before the body arrived.") from None
    if not body:
        return
    try:
        parse_json(body)
    except InvalidJson as exc:
        raise RequestValidationError([{"loc": ("body", *exc.loc), "msg": exc.message, "type": exc.kind}]) from None


def _query_names(dependant: Dependant) -> Iterator[str]:
    """The query parameters a route reads, its dependencies' included."""
    for field in dependant.query_params:
        model = field.field_info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):  # a query parameter model: its fields
            yield from (info.alias or name for name, info in model.model_fields.items())
        else:
            yield field.alias
    for sub in dependant.dependencies:
        yield from _query_names(sub)


class CheckedRoute(APIRoute):
    """An APIRoute that checks path, query and JSON body text before FastAPI parses them."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The FastAPI handler, behind the edge checks."""
        handler = super().get_route_handler()
        has_body = self.body_field is not None
        query_names = frozenset(_query_names(self.dependant))

        async def checked(request: Request) -> Response:
            check_request_text(request, query_names)
            if has_body:
                await check_json_body(request)
            return await handler(request)

        return checked


def api_router(**kwargs: Any) -> APIRouter:
    """An APIRouter whose routes are CheckedRoutes (use this, not APIRouter, for every router)."""
    return APIRouter(route_class=CheckedRoute, **kwargs)
