"""Analytics API: whether comments get answered (definitions: docs/analytics.md).

The same reports under two prefixes:
- `/v1/admin/analytics/...` (admin keys): every comment; plus `/workload` (responders' load and speed) and the
  breakdown by member, which only admins see.
- `/v1/analytics/...` (admin or responder keys): scoped to the caller; a responder's figures cover the comments of
  their own items and their teams' (as their queue does), an admin's cover everything.
"""

# No `from __future__ import annotations`: the routes are declared by a function, once per prefix, and FastAPI
# reads their parameters' annotations as objects (string annotations would be resolved in the module's globals).

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from routers.deps import AdminDep, ClockDep, ServicesDep, SessionDep, StaffDep
from routers.edge import api_router
from routers.problems import problem_responses
from service.analytics import export as exports
from service.analytics import figures, reports
from service.analytics.schemas import (
    BreakdownPublic,
    BreakdownQuery,
    ExportQuery,
    SummaryPublic,
    TrendsPublic,
    TrendsQuery,
    UnansweredPublic,
    UnansweredQuery,
    WindowQuery,
    WorkloadPublic,
)
from service.analytics.scope import Scope

router = api_router(responses=problem_responses(401, 403, 422))


async def admin_scope(_admin: AdminDep) -> Scope:
    """Every comment (an admin key)."""
    return Scope.all()


async def caller_scope(session: SessionDep, principal: StaffDep) -> Scope:
    """The caller's comments: an admin's all, a responder's those of their items and their teams'."""
    return await Scope.of(session, principal)


EXPORT_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One row per comment and its item, streamed.",
        "content": {"text/csv": {}, "application/json": {}, "application/x-ndjson": {}},
    }
}


def _declare(sub: APIRouter, prefix: str, scope_of: Callable[..., Awaitable[Scope]], who: str) -> None:
    ScopeDep = Annotated[Scope, Depends(scope_of)]  # noqa: N806 - a type alias, named as the others are

    @sub.get(f"{prefix}/summary", operation_id=f"{who}analytics_summary")
    async def summary(query: Annotated[WindowQuery, Query()], session: SessionDep, scope: ScopeDep,
                      now: ClockDep) -> SummaryPublic:  # fmt: skip
        """The figures of the comments received in the window: answered, how fast, within SLA, backlog, mood."""
        return await figures.summary(session, scope=scope, since=query.since, until=query.until, now=now)

    @sub.get(f"{prefix}/breakdown", operation_id=f"{who}analytics_breakdown")
    async def breakdown(query: Annotated[BreakdownQuery, Query()], session: SessionDep, scope: ScopeDep,
                        now: ClockDep) -> BreakdownPublic:  # fmt: skip
        """The same figures per channel, topic, team, member (admins only), source, thread or week."""
        return await figures.breakdown(session, by=query.by, scope=scope, since=query.since, until=query.until,
                                       now=now, limit=query.limit)  # fmt: skip

    @sub.get(f"{prefix}/trends", operation_id=f"{who}analytics_trends")
    async def trends(query: Annotated[TrendsQuery, Query()], session: SessionDep, scope: ScopeDep,
                     now: ClockDep) -> TrendsPublic:  # fmt: skip
        """One metric per week or day, optionally one series per group: for charts."""
        return await reports.trends(session, metric=query.metric, by=query.by, group=query.group, scope=scope,
                                    since=query.since, until=query.until, now=now, limit=query.limit)  # fmt: skip

    @sub.get(f"{prefix}/unanswered", operation_id=f"{who}analytics_unanswered")
    async def unanswered(query: Annotated[UnansweredQuery, Query()], session: SessionDep, scope: ScopeDep,
                         now: ClockDep) -> UnansweredPublic:  # fmt: skip
        """The stories and threads with the most questions that needed an answer and got none."""
        return await reports.unanswered_threads(session, scope=scope, since=query.since, until=query.until, now=now,
                                                limit=query.limit)  # fmt: skip

    @sub.get(f"{prefix}/export", operation_id=f"{who}analytics_export", response_class=StreamingResponse,
             responses=EXPORT_RESPONSE)  # fmt: skip
    async def export(query: Annotated[ExportQuery, Query()], services: ServicesDep, scope: ScopeDep,
                     now: ClockDep) -> StreamingResponse:  # fmt: skip
        """One row per comment and its item as CSV, a JSON array or JSON lines, streamed; bodies only with
        `include_bodies=true`, and then with personal data redacted."""
        found = await exports.export(services.session_factory, scope=scope, format=query.format, since=query.since,
                                     until=query.until, include_bodies=query.include_bodies, now=now)  # fmt: skip
        headers = {"Content-Disposition": f'attachment; filename="{found.filename}"', "Cache-Control": "no-store"}
        return StreamingResponse(found.chunks, media_type=found.media_type, headers=headers)


admin = api_router(tags=["admin: analytics"])
_declare(admin, "/v1/admin/analytics", admin_scope, "")


@admin.get("/v1/admin/analytics/workload", operation_id="analytics_workload")
async def workload(query: Annotated[WindowQuery, Query()], session: SessionDep, _admin: AdminDep,
                   now: ClockDep) -> WorkloadPublic:  # fmt: skip
    """Each responder's open items now, and the comments of the window they answered first and how fast."""
    return await reports.workload(session, scope=Scope.all(), since=query.since, until=query.until, now=now)


scoped = api_router(tags=["analytics"])
_declare(scoped, "/v1/analytics", caller_scope, "my_")
router.include_router(admin)
router.include_router(scoped)
