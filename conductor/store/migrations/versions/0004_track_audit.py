"""audit entries for tracks: release_id nullable, track_id

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("track_id", sa.String(length=100), nullable=True))
        batch_op.alter_column("release_id", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.alter_column("release_id", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("track_id")
