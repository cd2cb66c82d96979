"""What the analytics API takes and shows (the figures' meaning is defined once, in `service.analytics`)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.inputs import UtcDatetime

MAX_GROUPS = 1000
GroupBy = Literal["channel", "topic", "team", "member", "source", "thread", "week"]
TrendGroup = Literal["channel", "topic", "team", "member", "source"]
Bucket = Literal["week", "day"]
Metric = Literal[
    "received", "needs_answer", "answered", "response_rate", "first_response_p50", "first_response_p90",
    "within_sla", "escalated", "backlog", "held", "approved", "rejected", "pii", "sentiment_net",
    "negative", "neutral", "positive",
]  # fmt: skip
ExportFormat = Literal["csv", "json", "jsonl"]


# --- queries -----------------------------------------------------------------------------------------------


class WindowQuery(BaseModel):
    """The window: comments received since (inclusive) until (exclusive); by default the last 30 days."""

    model_config = ConfigDict(extra="forbid")

    since: UtcDatetime | None = Field(
        None, description="Received at or after (UTC if no offset); default until - 30 days."
    )
    until: UtcDatetime | None = Field(None, description="Received before (UTC if no offset); default now.")


class BreakdownQuery(WindowQuery):
    """Query of .../breakdown."""

    by: GroupBy
    limit: int = Field(100, ge=1, le=MAX_GROUPS, description="The groups with the most comments (weeks: in order).")


class TrendsQuery(WindowQuery):
    """Query of .../trends."""

    metric: Metric
    by: Bucket = "week"
    group: TrendGroup | None = Field(None, description="One series per group (the `limit` largest); else one series.")
    limit: int = Field(10, ge=1, le=50)


class UnansweredQuery(WindowQuery):
    """Query of .../unanswered."""

    limit: int = Field(20, ge=1, le=MAX_GROUPS)


class ExportQuery(WindowQuery):
    """Query of .../export."""

    format: ExportFormat = Field("csv", description="csv, a JSON array (json) or JSON lines (jsonl).")
    include_bodies: bool = Field(False, description="Add each comment's text, with personal data redacted.")


# --- figures -----------------------------------------------------------------------------------------------


class PercentilesPublic(BaseModel):
    """Percentiles in seconds (linear interpolation between closest ranks); None without values."""

    p50: float | None
    p90: float | None


class BacklogPublic(BaseModel):
    """Comments needing an answer whose item still waits (held, open, claimed, escalated), and their age."""

    open: int
    oldest_seconds: float | None
    p50_seconds: float | None


class SentimentPublic(BaseModel):
    """Comments per sentiment; net = (positive - negative) / (negative + neutral + positive)."""

    negative: int
    neutral: int
    positive: int
    net: float | None


class TopicCount(BaseModel):
    """How many comments were about a topic."""

    topic: str
    count: int


class FiguresPublic(BaseModel):
    """The figures of a set of comments, as docs/analytics.md defines them."""

    received: int
    needs_answer: int
    answered: int
    response_rate: float | None = Field(description="answered / needs_answer (0-1); None if nothing needs one.")
    first_response_seconds: PercentilesPublic
    within_sla: float | None = Field(description="Share (0-1) of decided comments with an SLA answered in time.")
    escalated: int
    backlog: BacklogPublic
    held: int
    approved: int
    rejected: int
    pii: int
    sentiment: SentimentPublic
    emotions: dict[str, int]
    topics: list[TopicCount]


class SummaryPublic(FiguresPublic):
    """The figures of every comment in the window the caller sees."""

    since: datetime
    until: datetime


class GroupPublic(FiguresPublic):
    """One group of a breakdown; `key` None gathers the comments without one (no channel, no team...)."""

    key: str | None
    label: str | None = Field(None, description="A readable name for the key (a thread's title).")


class BreakdownPublic(BaseModel):
    """The figures per group."""

    by: GroupBy
    since: datetime
    until: datetime
    groups: list[GroupPublic]


class PointPublic(BaseModel):
    """One bucket's value (None: undefined there, e.g. a rate with nothing to divide)."""

    bucket: str
    value: float | None


class SeriesPublic(BaseModel):
    """A series: one group's values per bucket (key None: every comment, or those without a group)."""

    key: str | None
    points: list[PointPublic]


class TrendsPublic(BaseModel):
    """A metric per week or day (buckets named by their first day, UTC), for charts."""

    metric: Metric
    by: Bucket
    group: TrendGroup | None
    since: datetime
    until: datetime
    buckets: list[str]
    series: list[SeriesPublic]


class ThreadPublic(BaseModel):
    """A story or thread and its unanswered questions."""

    source: str
    external_id: str
    title: str | None
    url: str | None
    channel: str | None
    received: int
    needs_answer: int
    unanswered: int = Field(description="Needing an answer and not answered.")
    oldest_unanswered_seconds: float | None


class UnansweredPublic(BaseModel):
    """The threads with the most unanswered questions, most first."""

    since: datetime
    until: datetime
    threads: list[ThreadPublic]


class ResponderPublic(BaseModel):
    """A responder's open load now and their answers in the window."""

    member: str
    name: str
    open: int = Field(description="Waiting items they own or hold now (any age).")
    claimed: int = Field(description="Items they hold a claim on now.")
    escalated: int = Field(description="Escalated items they own now.")
    oldest_open_seconds: float | None
    answered: int = Field(description="Comments of the window needing an answer that they answered first.")
    first_response_seconds: PercentilesPublic


class WorkloadPublic(BaseModel):
    """Responders' load and speed (admins only)."""

    since: datetime
    until: datetime
    responders: list[ResponderPublic]
