"""Who sees which queue items: an admin every item; a responder the items assigned to them, claimed by them, or
assigned to one of their teams. Any other item is answered with 404, as if it did not exist."""

from __future__ import annotations

import uuid
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.auth.keys import Principal, require_role
from service.directory import members as directory
from service.errors import NotFound
from service.models import QueueItem, Role

Scope = Literal["all", "mine", "teams"]


class Viewer:
    """The caller's reach: an admin sees everything; a responder their own items and their teams'."""

    def __init__(self, principal: Principal, teams: list[str]) -> None:
        self.principal = principal
        self.member_id = principal.member_id
        self.teams = teams
        self.is_admin = principal.role is Role.admin

    @classmethod
    async def of(cls, session: AsyncSession, principal: Principal) -> Viewer:
        """Load the responder's teams."""
        require_role(principal, Role.admin, Role.responder)
        teams = await directory.member_teams(session, principal.member_id) if principal.member_id else []
        return cls(principal, teams)

    def condition(self, scope: Scope = "all") -> sa.ColumnElement[bool]:
        """SQL: the items this caller may see, narrowed to `scope`."""
        mine = sa.or_(col(QueueItem.member_id) == self.member_id, col(QueueItem.claimed_by) == self.member_id)
        teams = col(QueueItem.team_id).in_(self.teams)
        if scope == "mine":
            return mine if self.member_id else sa.false()
        if scope == "teams":
            return teams
        if self.is_admin:
            return sa.true()
        return sa.or_(mine, teams) if self.member_id else sa.false()

    def moderates(self) -> sa.ColumnElement[bool]:
        """SQL: the items whose moderation is this caller's work: held for one of their teams or assigned to them."""
        if self.member_id is None:
            return sa.false()
        return sa.or_(col(QueueItem.team_id).in_(self.teams), col(QueueItem.member_id) == self.member_id)

    def sees(self, item: QueueItem) -> bool:
        """May this caller see the item?"""
        if self.is_admin:
            return True
        return self.member_id is not None and (
            self.member_id in (item.member_id, item.claimed_by)
            or (item.team_id is not None and item.team_id in self.teams)
        )

    @property
    def actor(self) -> str:
        """How the audit trail names the caller."""
        return f"member:{self.member_id}" if self.member_id else self.principal.actor


async def visible(session: AsyncSession, viewer: Viewer, item_id: uuid.UUID, *, lock: bool = False) -> QueueItem:
    stmt = sa.select(QueueItem).where(col(QueueItem.id) == item_id)
    if lock:
        stmt = stmt.with_for_update()
    item = (await session.execute(stmt)).scalar_one_or_none()
    if item is None or not viewer.sees(item):
        raise NotFound(f"There is no queue item {item_id} in your queues.")
    return item


async def sees_comment(session: AsyncSession, principal: Principal, comment_id: uuid.UUID) -> bool:
    """May the caller see this comment? Admins always; responders if its queue item is in their queues."""
    viewer = await Viewer.of(session, principal)
    if viewer.is_admin:
        return True
    found = await session.execute(
        sa.select(col(QueueItem.id)).where(col(QueueItem.comment_id) == comment_id, viewer.condition())
    )
    return found.first() is not None
