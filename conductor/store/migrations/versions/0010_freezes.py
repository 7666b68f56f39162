"""freezes: manual and calendar freezes per track or for every track

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 13:00:00
"""

import sqlalchemy as sa
from alembic import op

import conductor.store.models

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "freezes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("track_id", sa.String(length=100), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("starts_at", conductor.store.models.UTCDateTime(), nullable=False),
        sa.Column("ends_at", conductor.store.models.UTCDateTime(), nullable=True),
        sa.Column("skip_branch_cut", sa.Boolean(), nullable=False),
        sa.Column("created_at", conductor.store.models.UTCDateTime(), nullable=False),
        sa.Column("lifted_at", conductor.store.models.UTCDateTime(), nullable=True),
        sa.Column("lifted_by", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_freezes_active", "freezes", ["lifted_at", "starts_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_freezes_active", table_name="freezes")
    op.drop_table("freezes")
