"""Revocations recorded for the other processes sharing the database to
follow (table revocations; storage/token_cache.py, housekeeping.py).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_MYSQL: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin", "mysql_engine": "InnoDB"}


def upgrade() -> None:
    op.create_table(
        "revocations",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("revoked", sa.String(128), primary_key=True),
        sa.Column("revoked_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        **_MYSQL,
    )
    op.create_index("revocations_since", "revocations", ["revoked_at"])
    op.create_index("revocations_expiry", "revocations", ["expires_at"])


def downgrade() -> None:
    op.drop_table("revocations")
