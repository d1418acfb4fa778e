"""The settings of the named upstream presets that no column held: an
Entra configuration's tenant and a Cognito one's user pool id.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("oauth_configs") as batch:
        batch.add_column(sa.Column("tenant", sa.String(64), nullable=True))
        batch.add_column(sa.Column("user_pool_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("oauth_configs") as batch:
        batch.drop_column("user_pool_id")
        batch.drop_column("tenant")
