"""inbox rows carry the repository and branch they name; due timers come from a partial index

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 09:00:00

The worker locks a batch of inbox rows and finds the tracks of their repositories in one
statement (a join on inbox.repository), instead of reading each payload and then the tracks.
Timers are read by due time among the unfired ones only, from an index of just those.
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
        batch_op.drop_column("branch")
        batch_op.drop_column("repository")
