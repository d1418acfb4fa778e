"""Login sessions bound to the browser that consented (auth_sessions.browser_hash).

Version 2 of the hand-kept schema_version table.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A login begun before the upgrade has no browser to check at its
    # callback: it is dropped, and the person starts again. The column's
    # default serves only this step (the table is empty by then).
    op.execute(sa.text("DELETE FROM auth_sessions"))
    with op.batch_alter_table("auth_sessions") as batch:
        batch.add_column(sa.Column("browser_hash", sa.String(64), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("auth_sessions") as batch:  # SQLite: the table is copied without it
        batch.drop_column("browser_hash")
