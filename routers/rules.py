"""Admin API: the routing rules (versioned), and tuning them with evidence (simulate, explain, suggestions)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Response

from routers.deps import AdminDep, ClassifierDep, ClockDep, JobsDep, SessionDep, SettingsDep
from routers.edge import api_router
from routers.params import RowId
from routers.problems import problem_responses
from service.routing import explain, rules, simulation, suggestions
from service.routing.explain import ExplainIn, ExplainPublic
from service.routing.rules import RulesetPublic, RulesetVersionIn
from service.routing.simulation import RerouteIn, ReroutePublic, SimulateIn, SimulationPublic
from service.routing.suggestions import SuggestionsPublic

router = api_router(prefix="/v1/admin/rules", tags=["admin: rules"], responses=problem_responses(401, 403))


@router.get("", operation_id="get_rules")
async def get_rules(session: SessionDep, _admin: AdminDep) -> RulesetPublic:
    """The live routing rules: ordered, first match wins, the last is the default."""
    return await rules.current(session)


@router.put("", operation_id="replace_rules", responses=problem_responses(404, 409, 422))
async def replace_rules(data: RulesetVersionIn, session: SessionDep, admin: AdminDep, now: ClockDep) -> RulesetPublic:
    """Save a whole new version of the rules (validated; regular expressions are RE2; audited).

    With `simulation_id`: 404 if there is no such simulation, 409 unless it is done and tried exactly these rules."""
    return await rules.replace(session, data=data, actor=admin.actor, now=now)


@router.get("/versions/{version}", operation_id="get_rules_version", responses=problem_responses(404, 422))
async def get_rules_version(version: RowId, session: SessionDep, _admin: AdminDep) -> RulesetPublic:
    """One version of the rules, old or live."""
    return await rules.read_version(session, version=version)


@router.post(
    "/simulate",
    status_code=201,
    operation_id="simulate_rules",
    responses={202: {"model": SimulationPublic, "description": "A large window: running in the background."},
               **problem_responses(404, 422)},
)  # fmt: skip
async def simulate_rules(
    data: SimulateIn,
    response: Response,
    session: SessionDep,
    jobs: JobsDep,
    settings: SettingsDep,
    admin: AdminDep,
    now: ClockDep,
) -> SimulationPublic:
    """Replay stored comments through a draft ruleset (and/or thresholds) and the live one; nothing live changes."""
    result, background = await simulation.create(session, data=data, actor=admin.actor, settings=settings, now=now)
    if background:
        jobs.run_simulation(result.id)
        response.status_code = 202
    return result


@router.post("/explain", operation_id="explain_routing", responses=problem_responses(404, 422))
async def explain_routing(
    data: ExplainIn,
    session: SessionDep,
    settings: SettingsDep,
    _admin: AdminDep,
    classifier: ClassifierDep,
    now: ClockDep,
) -> ExplainPublic:
    """Classify one comment and route it through the live (or a draft) ruleset, with every rule's trace."""
    return await explain.explain(session, classifier, data=data, settings=settings, now=now)


@router.get("/suggestions", operation_id="suggest_rules", responses=problem_responses(422))
async def suggest_rules(
    session: SessionDep,
    settings: SettingsDep,
    _admin: AdminDep,
    now: ClockDep,
    days: Annotated[int, Query(ge=1, le=365)] = 30,
    min_reassignments: Annotated[int, Query(ge=2, le=1000)] = 5,
) -> SuggestionsPublic:
    """Rules learned from responders' reassignments, with the evidence and a simulation of adding each."""
    return await suggestions.suggestions(
        session, settings=settings, now=now, days=days, min_reassignments=min_reassignments
    )


@router.post("/reroute", operation_id="reroute_items", responses=problem_responses(422))
async def reroute_items(
    data: RerouteIn, session: SessionDep, settings: SettingsDep, admin: AdminDep, now: ClockDep
) -> ReroutePublic:
    """Re-route the waiting items of a window with the live rules (claimed or hand-assigned items are kept)."""
    return await simulation.reroute(session, data=data, actor=admin.actor, settings=settings, now=now)
