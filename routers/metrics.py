"""The operators' view over HTTP: `GET /metrics` (Prometheus, behind its own bearer token) and the middleware that
times every request, counts refused webhooks and writes one log line per request.

`/metrics` is left out of the OpenAPI document: it is for Prometheus, not for API clients, and it is not served at
all (404) unless `metrics_token` is set.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Annotated

from fastapi import Depends, FastAPI, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from routers import webhooks
from routers.deps import ClockDep, SessionDep, SettingsDep
from routers.edge import api_router
from routers.problems import request_id_of
from service import metrics, monitoring
from service.errors import NotFound, Unauthenticated

log = logging.getLogger(__name__)

router = api_router(tags=["metrics"])
_bearer = HTTPBearer(auto_error=False)

UNMATCHED = "unmatched"  # the route label of requests no route answered (raw paths would be unbounded)


def require_metrics_token(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Let the scrape through only with `Authorization: Bearer <metrics_token>`; no token set: not served."""
    if settings.metrics_token is None:
        raise NotFound("There is no /metrics here: set SWITCHBOARD_METRICS_TOKEN to serve it.")
    expected = settings.metrics_token.get_secret_value().encode()
    given = credentials.credentials.encode() if credentials is not None else b""
    if not hmac.compare_digest(given, expected):
        raise Unauthenticated("Scraping /metrics needs `Authorization: Bearer <SWITCHBOARD_METRICS_TOKEN>`.")


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(require_metrics_token)])
async def scrape(session: SessionDep, now: ClockDep) -> Response:
    """Every metric in the Prometheus text format, the job and outbox gauges read now."""
    return Response(await monitoring.scrape(session, now=now), media_type=metrics.CONTENT_TYPE)


class Instrument:
    """Outermost middleware: each request's duration by route template, method and status class; refused
    webhooks by problem code; one log line per request (route template, never the path's values or the query).

    Pure ASGI, like LastResort inside it, so streaming responses are timed to their last byte.
    """

    def __init__(self, app: ASGIApp, *, webhook_routes: frozenset[str]) -> None:
        self.app = app
        self.webhook_routes = webhook_routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if nothing was sent (the client went away mid-request)

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope.get("method", "")
            metrics.HTTP_REQUEST_SECONDS.labels(route=route, method=method, status=f"{status // 100}xx").observe(
                seconds
            )
            state = scope.get("state", {})
            if route in self.webhook_routes and status >= 400:
                metrics.WEBHOOKS_REFUSED.labels(reason=state.get("problem_code") or "internal").inc()
            log.info(
                "%s %s %d", method, route, status,
                extra={"request_id": request_id_of(scope), "method": method, "route": route, "status": status,
                       "duration_ms": round(seconds * 1000, 1)},
            )  # fmt: skip


def install(app: FastAPI) -> None:
    """Serve /metrics and time every request (call after `problems.install`: this middleware goes outside it)."""
    app.include_router(router)
    paths = frozenset(r.path for r in webhooks.router.routes if isinstance(r, APIRoute))
    app.add_middleware(Instrument, webhook_routes=paths)
