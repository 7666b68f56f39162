"""four-eyes by identity: tokens name the VCS identities they stand for; releases keep every commit
pushed to their branch since the last approval

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("identities", sa.JSON(), nullable=False, server_default="[]"))
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("commits_since_approval", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.drop_column("commits_since_approval")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("identities")
