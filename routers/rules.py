"""Admin API: the routing rules (versioned)."""

from __future__ import annotations

from fastapi import APIRouter

from routers.problems import problem_responses
from service import rules
from service.deps import AdminDep, SessionDep
from service.rules import RulesetPublic, RulesetPut

router = APIRouter(prefix="/v1/admin/rules", tags=["admin: rules"], responses=problem_responses(401, 403))


@router.get("", operation_id="get_rules")
async def get_rules(session: SessionDep, _admin: AdminDep) -> RulesetPublic:
    """The live routing rules: ordered, first match wins, the last is the default."""
    return await rules.current(session)


@router.put("", operation_id="replace_rules", responses=problem_responses(409, 422))
async def replace_rules(data: RulesetPut, session: SessionDep, admin: AdminDep) -> RulesetPublic:
    """Save a whole new version of the rules (validated; regular expressions are RE2; audited)."""
    return await rules.replace(session, data=data, actor=admin.actor)


@router.get("/versions/{version}", operation_id="get_rules_version", responses=problem_responses(404, 422))
async def get_rules_version(version: int, session: SessionDep, _admin: AdminDep) -> RulesetPublic:
    """One version of the rules, old or live."""
    return await rules.read_version(session, version=version)
