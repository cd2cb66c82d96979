"""The analytics fact table: one narrow row per received comment, with what every figure reads.

It is derived data. `service.analytics.upkeep` keeps it in step with the comment, its analysis, its queue item and
the item's audit trail in the transaction that changes them, and `switchboard rebuild-analytics` derives it afresh
from those rows. The figures read only this table (and the small thread and source tables), so a 90-day summary is
one scan of narrow rows instead of a join of four tables with JSON parsing and audit-trail lookups.

The columns are the ingredients of the definitions, and those results of them that do not depend on `now` (needs
an answer, answered, seconds to the first response, answered within the deadline, waiting); what depends on `now`
(a deadline passed, the backlog's age) is decided when a query runs.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.models.base import ts_column


def _text(length: int) -> sa.Column[str]:
    return sa.Column(sa.String(length), nullable=True)


class AnalyticsFact(SQLModel, table=True):
    """What analytics needs of one comment (echoes of our own replies have none)."""

    __tablename__ = "analytics_fact"

    comment_id: uuid.UUID = Field(sa_column=sa.Column(sa.Uuid, sa.ForeignKey("comment.id"), primary_key=True))
    received_at: datetime = Field(sa_column=ts_column(index=True))
    source_id: int
    thread_id: int | None = None
    deleted: bool = False
    # The queue item, if the comment has one.
    item_id: uuid.UUID | None = Field(default=None, sa_column=sa.Column(sa.Uuid, nullable=True))
    state: str | None = Field(default=None, sa_column=_text(16))
    resolution: str | None = Field(default=None, sa_column=_text(32))
    no_reply: bool = False
    member_id: str | None = Field(default=None, sa_column=_text(64))
    team_id: str | None = Field(default=None, sa_column=_text(64))
    answered_by: str | None = Field(default=None, sa_column=_text(200))
    first_response_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    due_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    # Labels: the item's (as responders corrected them) when there is an item, else the classifier's.
    sentiment: str | None = Field(default=None, sa_column=_text(16))
    topic: str | None = Field(default=None, sa_column=_text(100))
    emotion: str | None = Field(default=None, sa_column=_text(32))
    needs_label: bool = False  # the classifier's needs-answer head said `needs_answer`
    pii: bool = False
    # From the item's audit trail.
    escalated: bool = False
    held: bool = False
    approved: bool = False
    rejected: bool = False
    # The definitions that do not depend on `now`, decided when the row is derived (see the package's definitions):
    # needs an answer; answered; seconds to the first response (answered ones); answered by the deadline; waiting.
    needs: bool = False
    answered: bool = False
    first_response_seconds: float | None = None
    sla_met: bool = False
    waiting: bool = False
