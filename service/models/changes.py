"""Which comments a transaction changed: derived data (the analytics facts) is brought up to date at commit.

Changes made through the ORM are collected after every flush: a comment, its analysis or its queue item written,
changed or deleted. A statement that bypasses the ORM (a conditional UPDATE that decides a race, say) names what it
changed with `touch`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from itertools import chain
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from service.models.comment import Comment, CommentAnalysis
from service.models.queue import QueueItem

_COMMENTS: Final = "changed_comments"
_ITEMS: Final = "changed_items"


def _sets(session: Session) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    comments: set[uuid.UUID] = session.info.setdefault(_COMMENTS, set())
    items: set[uuid.UUID] = session.info.setdefault(_ITEMS, set())
    return comments, items


def touch(
    session: Session | AsyncSession, *, comments: Iterable[uuid.UUID] = (), items: Iterable[uuid.UUID] = ()
) -> None:
    """Note comments (and the comments of queue items) that a statement outside the ORM changed."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    found_comments, found_items = _sets(sync)
    found_comments.update(comments)
    found_items.update(items)


def take(session: Session) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """The comments and queue items changed in this transaction so far; forgets them."""
    return session.info.pop(_COMMENTS, set()), session.info.pop(_ITEMS, set())


@event.listens_for(Session, "after_flush")
def _collect(session: Session, _context: Any) -> None:
    # In after_flush, new / dirty / deleted still hold what this flush wrote.
    comments, _ = _sets(session)
    for row in chain(session.new, session.dirty, session.deleted):
        if isinstance(row, Comment):
            comments.add(row.id)
        elif isinstance(row, CommentAnalysis | QueueItem):
            comments.add(row.comment_id)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    take(session)
