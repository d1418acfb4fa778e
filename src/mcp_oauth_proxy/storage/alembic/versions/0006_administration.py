"""Administration: the admin API's tokens (hashes only, global or of one
organization) and the audit log (flows' and admin actions' events, kept
until they expire).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_MYSQL: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin", "mysql_engine": "InnoDB"}
_LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")  # also schema.Json's column


def _text(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, _LONG_TEXT, nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "admin_tokens",
        sa.Column("token_id", sa.String(64), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        _text("label"),
        sa.Column("organization", sa.String(64), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.ForeignKeyConstraint(["organization"], ["organizations.name"], name="admin_tokens_organization"),
        **_MYSQL,
    )
    op.create_index("admin_tokens_by_hash", "admin_tokens", ["token_hash"], unique=True)
    op.create_table(
        "audit_events",
        # SQLite numbers only an INTEGER PRIMARY KEY by itself (AUTOINCREMENT,
    # below: never again a number it gave, once swept).
        sa.Column("event_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=True),
        sa.Column("organization", sa.String(64), nullable=True),
        _text("client_id", nullable=True),
        _text("user_id", nullable=True),
        sa.Column("actor", sa.String(64), nullable=True),
        _text("detail"),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sqlite_autoincrement=True,
        **_MYSQL,
    )
    op.create_index("audit_events_by_tenant", "audit_events", ["tenant", "event_id"])
    op.create_index("audit_events_by_organization", "audit_events", ["organization", "event_id"])
    op.create_index("audit_events_expiry", "audit_events", ["expires_at"])


def downgrade() -> None:
    for table in ("audit_events", "admin_tokens"):
        op.drop_table(table)
