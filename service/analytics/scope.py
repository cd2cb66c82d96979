"""Whose comments an analytics query covers, and the window it covers them in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from service.analytics.facts import Dialect, Window
from service.auth.keys import Principal
from service.database import dialect_name
from service.errors import Forbidden, InvalidPayload
from service.queue.viewer import Viewer

DEFAULT_WINDOW = timedelta(days=30)
MAX_WINDOW = timedelta(days=366)


@dataclass(frozen=True, slots=True)
class Scope:
    """An admin's reach (every comment) or a responder's (the comments of their items and their teams')."""

    condition: sa.ColumnElement[bool]  # SQL over queue_item (LEFT JOINed: a responder's excludes item-less comments)
    everything: bool

    @classmethod
    async def of(cls, session: AsyncSession, principal: Principal) -> Scope:
        """The caller's scope, decided as the queue decides who sees which item (`service.queue.viewer`)."""
        viewer = await Viewer.of(session, principal)
        return cls(viewer.condition(), viewer.is_admin)

    @classmethod
    def all(cls) -> Scope:
        """Every comment (admins, benchmarks, the CLI)."""
        return cls(sa.true(), True)

    def require_everything(self, what: str) -> None:
        """Forbidden unless this is an admin's scope."""
        if not self.everything:
            raise Forbidden(f"Only admins may see {what}.")


def window(
    session: AsyncSession, *, scope: Scope, since: datetime | None, until: datetime | None, now: datetime
) -> Window:
    """The window asked for (default: the 30 days up to now); InvalidPayload if it is empty or over a year."""
    end = until or now
    start = since or end - DEFAULT_WINDOW
    if start >= end:
        raise InvalidPayload("`since` must be before `until`.")
    if end - start > MAX_WINDOW:
        raise InvalidPayload(f"A window is at most {MAX_WINDOW.days} days; ask for several.")
    return Window(cast(Dialect, dialect_name(session)), start, end, now, None if scope.everything else scope.condition)
