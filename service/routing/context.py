"""What routing reads of stored comments and people: each comment with its thread, source and classification as
responders corrected it, and the directory with every member's load.

Responders' corrections (labels) are applied over the stored classification wherever routing or a responder
reads it (`corrected`); the stored document stays what the classifiers said.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.classification.classifier import BINARY_HEADS, decide
from service.models import (
    Comment,
    CommentAnalysis,
    ItemState,
    Label,
    Member,
    MemberIdentity,
    QueueItem,
    Source,
    Team,
    TeamMember,
    Thread,
)
from service.routing import Directory, Facts, MemberInfo, TeamInfo

# The states that count in a member's load (held items wait for moderation, not for them).
LOAD_STATES = (ItemState.open, ItemState.claimed, ItemState.escalated)


@dataclass(frozen=True, slots=True)
class Context:
    """One comment with what routing needs to know about it (its classification as corrected by responders)."""

    comment: Comment
    thread: Thread | None
    source_slug: str
    classification: Mapping[str, Any] | None
    flags: frozenset[str] = frozenset()  # flags a responder set that no head decides (spam, personal data)


def facts_of(ctx: Context) -> Facts:
    """What the rules see of a comment."""
    thread = ctx.thread
    return Facts(
        source=ctx.source_slug,
        text=ctx.comment.body,
        channel=thread.channel if thread else None,
        thread_kind=thread.kind if thread else None,
        thread_author=thread.author_external_id if thread else None,
        author=ctx.comment.author_external_id,
        author_department=ctx.comment.author_department,
        is_reply=ctx.comment.parent_external_id is not None,
        classification=ctx.classification,
        extra_flags=ctx.flags,
    )


def corrected(
    doc: Mapping[str, Any] | None, labels: Sequence[Label]
) -> tuple[Mapping[str, Any] | None, frozenset[str]]:
    """The classification as responders corrected it (later corrections win), and the flags no head decides.

    A corrected head keeps its scores and names who corrected it (`corrected_by`).
    """
    if not labels:
        return doc, frozenset()
    out: dict[str, Any] = dict(doc or {})
    extra: set[str] = set()

    def set_label(head: str, label: str, actor: str) -> None:
        before = out.get(head)
        out[head] = {**(before if isinstance(before, Mapping) else {}), "label": label, "corrected_by": actor}

    for label in labels:
        if label.topic is not None:
            set_label("topic", label.topic, label.actor)
        if label.sentiment is not None:
            set_label("sentiment", label.sentiment, label.actor)
        for flag, value in (label.flags or {}).items():
            if flag in BINARY_HEADS:
                positive, negative = BINARY_HEADS[flag]
                set_label(flag, positive if value else negative, label.actor)
            elif flag == "pii" and not value:
                out["pii"] = []
                extra.discard("pii")
            elif value:
                extra.add(flag)
            else:
                extra.discard(flag)
    return out, frozenset(extra)


def with_thresholds(doc: Mapping[str, Any] | None, thresholds: Mapping[str, float] | None) -> Mapping[str, Any] | None:
    """The classification as it would read under other thresholds of the binary heads (from the stored scores)."""
    if doc is None or not thresholds:
        return doc
    changed = dict(doc)
    for name in BINARY_HEADS:
        head = doc.get(name)
        if name in thresholds and isinstance(head, Mapping) and isinstance(head.get("scores"), Mapping):
            if "corrected_by" in head:  # a responder's word is not a score
                continue
            changed[name] = {**head, "label": decide(name, str(head.get("label")), head["scores"], thresholds)}
    return changed


async def labels_of(session: AsyncSession, comment_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Label]]:
    """Every correction of these comments, oldest first."""
    found: dict[uuid.UUID, list[Label]] = defaultdict(list)
    if comment_ids:
        rows = await session.execute(
            sa.select(Label).where(col(Label.comment_id).in_(comment_ids)).order_by(col(Label.id))
        )
        for label in rows.scalars():
            found[label.comment_id].append(label)
    return found


async def contexts(session: AsyncSession, comment_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Context]:
    """The comments with their thread, source and classification as responders corrected it."""
    rows = (
        await session.execute(
            sa.select(Comment, Thread, col(Source.slug), col(CommentAnalysis.classification))
            .join(Source, col(Source.id) == col(Comment.source_id))
            .outerjoin(Thread, col(Thread.id) == col(Comment.thread_id))
            .outerjoin(CommentAnalysis, col(CommentAnalysis.comment_id) == col(Comment.id))
            .where(col(Comment.id).in_(comment_ids))
        )
    ).all()
    labels = await labels_of(session, comment_ids)
    found = {}
    for comment, thread, slug, classification in rows:
        doc, flags = corrected(classification, labels.get(comment.id, []))
        found[comment.id] = Context(comment=comment, thread=thread, source_slug=slug, classification=doc, flags=flags)
    return found


async def load(
    session: AsyncSession, comment_ids: Sequence[uuid.UUID], *, lock: bool = False
) -> list[tuple[Context, QueueItem | None]]:
    """The comments (in the given order) with their context and queue item; `lock`: the items are locked
    (PostgreSQL, in id order) and read afresh, for a caller about to change them."""
    found = await contexts(session, comment_ids)
    query = sa.select(QueueItem).where(col(QueueItem.comment_id).in_(comment_ids))
    if lock:
        query = query.order_by(col(QueueItem.id)).execution_options(populate_existing=True)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
    items_of = {item.comment_id: item for item in (await session.execute(query)).scalars()}
    return [(found[i], items_of.get(i)) for i in comment_ids if i in found]


async def load_directory(session: AsyncSession) -> Directory:
    """Members, teams, each member's current load and each team's round-robin position, for `route`."""
    members = (await session.execute(sa.select(Member).where(col(Member.deleted_at).is_(None)))).scalars().all()
    identities = (
        await session.execute(
            sa.select(col(MemberIdentity.member_id), col(Source.slug), col(MemberIdentity.external_id)).join(
                Source, col(Source.id) == col(MemberIdentity.source_id)
            )
        )
    ).all()
    ids_of: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for member_id, slug, external_id in identities:
        ids_of[member_id].add((slug, external_id))
    teams = (await session.execute(sa.select(Team).where(col(Team.deleted_at).is_(None)))).scalars().all()
    memberships = (
        await session.execute(
            sa.select(col(TeamMember.team_id), col(TeamMember.member_id)).order_by(
                col(TeamMember.team_id), col(TeamMember.position)
            )
        )
    ).all()
    members_of: dict[str, list[str]] = defaultdict(list)
    for team_id, member_id in memberships:
        members_of[team_id].append(member_id)
    load_rows = (
        await session.execute(
            sa.select(col(QueueItem.member_id), sa.func.count())
            .where(col(QueueItem.member_id).is_not(None), col(QueueItem.state).in_([s.value for s in LOAD_STATES]))
            .group_by(col(QueueItem.member_id))
        )
    ).all()
    return Directory(
        members={
            m.id: MemberInfo(
                id=m.id,
                name=m.name,
                capacity=m.capacity,
                away_until=m.away_until,
                delegate=m.delegate_id,
                external_ids=frozenset(ids_of.get(m.id, ())),
            )
            for m in members
        },
        teams={
            t.id: TeamInfo(
                id=t.id,
                name=t.name,
                members=tuple(members_of.get(t.id, ())),
                lead=t.lead_id,
                strategy="least_loaded" if t.strategy == "least_loaded" else "round_robin",
            )
            for t in teams
        },
        load={member_id: int(n) for member_id, n in load_rows if member_id is not None},
        last_assigned={t.id: t.last_assigned_id for t in teams if t.last_assigned_id},
    )
