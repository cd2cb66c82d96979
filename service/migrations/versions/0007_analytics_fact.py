"""analytics_fact: one narrow row per comment for the analytics figures; audit_event indexed by target

The table is derived data: `service.migrate.upgrade` fills it (`service.analytics.upkeep.rebuild`) when a database
crosses this revision, and `switchboard rebuild-analytics` derives it afresh at any time.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 21:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.models.base

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    ts = service.models.base.UTCDateTime(timezone=True)
    op.create_table(
        "analytics_fact",
        sa.Column("comment_id", sa.Uuid(), nullable=False),
        sa.Column("received_at", ts, nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("thread_id", sa.Integer(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("item_id", sa.Uuid(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=True),
        sa.Column("resolution", sa.String(length=32), nullable=True),
        sa.Column("no_reply", sa.Boolean(), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=True),
        sa.Column("team_id", sa.String(length=64), nullable=True),
        sa.Column("answered_by", sa.String(length=200), nullable=True),
        sa.Column("first_response_at", ts, nullable=True),
        sa.Column("due_at", ts, nullable=True),
        sa.Column("sentiment", sa.String(length=16), nullable=True),
        sa.Column("topic", sa.String(length=100), nullable=True),
        sa.Column("emotion", sa.String(length=32), nullable=True),
        sa.Column("needs_label", sa.Boolean(), nullable=False),
        sa.Column("pii", sa.Boolean(), nullable=False),
        sa.Column("escalated", sa.Boolean(), nullable=False),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.Column("approved", sa.Boolean(), nullable=False),
        sa.Column("rejected", sa.Boolean(), nullable=False),
        sa.Column("needs", sa.Boolean(), nullable=False),
        sa.Column("answered", sa.Boolean(), nullable=False),
        sa.Column("first_response_seconds", sa.Float(), nullable=True),
        sa.Column("sla_met", sa.Boolean(), nullable=False),
        sa.Column("waiting", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["comment_id"], ["comment.id"]),
        sa.PrimaryKeyConstraint("comment_id"),
    )
    op.create_index("ix_analytics_fact_received_at", "analytics_fact", ["received_at"], unique=False)
    op.create_index("ix_audit_event_target", "audit_event", ["target_type", "target_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_event_target", table_name="audit_event")
    op.drop_index("ix_analytics_fact_received_at", table_name="analytics_fact")
    op.drop_table("analytics_fact")
