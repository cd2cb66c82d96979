"""SQLModel tables (importing this package registers them all on SQLModel.metadata)."""

from service.models.auth import ApiKey, AuditEvent, Role
from service.models.comment import Comment, CommentAnalysis, CommentVersion, Thread
from service.models.directory import Member, MemberIdentity, Strategy, Team, TeamMember
from service.models.job import OPEN_JOB_STATES, Delivery, Job, JobKind, JobState
from service.models.queue import (
    ItemState,
    Priority,
    QueueItem,
    Reply,
    Resolution,
    RulesetVersion,
    Simulation,
    SimulationState,
)
from service.models.source import Source, SourceKind
from service.models.topic import Label, Topic

__all__ = [
    "OPEN_JOB_STATES",
    "ApiKey",
    "AuditEvent",
    "Comment",
    "CommentAnalysis",
    "CommentVersion",
    "Delivery",
    "ItemState",
    "Job",
    "JobKind",
    "JobState",
    "Label",
    "Member",
    "MemberIdentity",
    "Priority",
    "QueueItem",
    "Reply",
    "Resolution",
    "Role",
    "RulesetVersion",
    "Simulation",
    "SimulationState",
    "Source",
    "SourceKind",
    "Strategy",
    "Team",
    "TeamMember",
    "Thread",
    "Topic",
]
