"""Admin API: the audit trail (search, and verify its hash chain)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from routers.deps import AdminDep, SessionDep
from routers.edge import api_router
from routers.problems import problem_responses
from service.audit import search as audit_log
from service.audit.search import AuditFilter, AuditPage, VerificationPublic

router = api_router(prefix="/v1/admin/audit", tags=["admin: audit"], responses=problem_responses(401, 403))


@router.get("", operation_id="list_audit_events", responses=problem_responses(422))
async def list_audit_events(query: Annotated[AuditFilter, Query()], session: SessionDep, _admin: AdminDep) -> AuditPage:
    """Audit records newest first, filtered by actor, action prefix, target and time; cursor pagination."""
    return await audit_log.search(session, query=query)


@router.get("/verify", operation_id="verify_audit_chain")
async def verify_audit_chain(session: SessionDep, _admin: AdminDep) -> VerificationPublic:
    """Recompute every record's hash: `ok`, or the id of the first record that was edited, removed or inserted."""
    return await audit_log.verify(session)
