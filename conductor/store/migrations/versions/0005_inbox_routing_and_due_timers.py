"""inbox rows carry the repository and branch they name and their body's digest; due timers come
from a partial index

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 09:00:00

The worker locks a batch of inbox rows and finds the tracks of their repositories in one
statement (a join on inbox.repository), instead of reading each payload and then the tracks.
A GitHub or GitLab body (their signatures cover no timestamp or id) that comes again under a new
delivery id within the replay window is found by its digest. Timers are read by due time among
the unfired ones only, from an index of just those.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("repository", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("branch", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("body_digest", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_inbox_replay", ["source", "body_digest", "received_at"], unique=False)
    with op.batch_alter_table("timers", schema=None) as batch_op:
        batch_op.drop_index("ix_timers_due")
    op.create_index(
        "ix_timers_pending",
        "timers",
        ["due_at"],
        unique=False,
        postgresql_where=sa.text("fired_at IS NULL"),
        sqlite_where=sa.text("fired_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_timers_pending", table_name="timers")
    with op.batch_alter_table("timers", schema=None) as batch_op:
        batch_op.create_index("ix_timers_due", ["fired_at", "due_at"], unique=False)
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_index("ix_inbox_replay")
        batch_op.drop_column("body_digest")
        batch_op.drop_column("branch")
        batch_op.drop_column("repository")
