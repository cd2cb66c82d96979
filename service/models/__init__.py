"""The tables several features share (`service.tables` imports every table, these and the features' own)."""

import service.models.changes  # noqa: F401  (collects the comments each transaction changes)
from service.models.auth import ApiKey, Role
from service.models.comment import Comment, CommentAnalysis, CommentVersion, Thread
from service.models.directory import Member, MemberIdentity, Strategy, Team, TeamMember
from service.models.job import OPEN_JOB_STATES, Delivery, Job, JobKind, JobState
from service.models.queue import (
    ItemState,
    Priority,
    QueueItem,
    Reply,
    ReplyDelivery,
    Resolution,
)
from service.models.source import Source, SourceKind
from service.models.topic import Label, Topic

__all__ = [
    "OPEN_JOB_STATES",
    "ApiKey",
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
    "ReplyDelivery",
    "Resolution",
    "Role",
    "Source",
    "SourceKind",
    "Strategy",
    "Team",
    "TeamMember",
    "Thread",
    "Topic",
]
