"""sweeper bookkeeping on the inbox, adapter results on the outbox

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 09:00:00
"""

import sqlalchemy as sa
from alembic import op

import conductor.store.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("enqueued_at", conductor.store.models.UTCDateTime(), nullable=True))
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("result", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("result")
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_column("enqueued_at")
