"""signals carry their counts and the ring they measured; evaluations their evidence digest

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 11:00:00

A compare gate decides from counts (events out of samples) against the baseline release's value
in the same ring (signals.stage, the stage the release was in when the value was recorded). An
evaluation is stored again when its evidence changed (evaluations.digest) though the question it
puts (evaluations.fingerprint) did not.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("signals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("events", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("stage", sa.String(length=50), nullable=True))
        batch_op.create_index("ix_signals_baseline", ["name", "stage", "release_id"], unique=False)
    with op.batch_alter_table("evaluations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("digest", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("evaluations", schema=None) as batch_op:
        batch_op.drop_column("digest")
    with op.batch_alter_table("signals", schema=None) as batch_op:
        batch_op.drop_index("ix_signals_baseline")
        batch_op.drop_column("stage")
        batch_op.drop_column("events")
