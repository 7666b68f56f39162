"""releases know their store build; store states (wanted, seen, drift); pulled sources' due polls

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 12:00:00
"""

import sqlalchemy as sa
from alembic import op

import conductor.store.models

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("build", sa.String(length=50), nullable=True))
    op.create_table(
        "store_states",
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("store", sa.String(length=20), nullable=False),
        sa.Column("build", sa.String(length=50), nullable=True),
        sa.Column("wanted", sa.JSON(), nullable=True),
        sa.Column("wanted_at", conductor.store.models.UTCDateTime(), nullable=True),
        sa.Column("seen", sa.JSON(), nullable=True),
        sa.Column("synced_at", conductor.store.models.UTCDateTime(), nullable=True),
        sa.Column("drift_since", conductor.store.models.UTCDateTime(), nullable=True),
        sa.Column("drift", sa.JSON(), nullable=True),
        sa.Column("budget_asked_at", conductor.store.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"]),
        sa.PrimaryKeyConstraint("release_id"),
    )
    op.create_table(
        "source_polls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("track_id", sa.String(length=100), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("due_at", conductor.store.models.UTCDateTime(), nullable=False),
        sa.Column("lease_until", conductor.store.models.UTCDateTime(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_polled_at", conductor.store.models.UTCDateTime(), nullable=True),
        sa.Column("last_success_at", conductor.store.models.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_latency_ms", sa.Float(), nullable=True),
        sa.Column("polls", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("release_id", "source"),
    )
    op.create_index("ix_source_polls_due", "source_polls", ["due_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_source_polls_due", table_name="source_polls")
    op.drop_table("source_polls")
    op.drop_table("store_states")
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.drop_column("build")
