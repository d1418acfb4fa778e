"""The directory in the database: organizations, their OAuth configurations
(upstream providers, client secrets sealed) and servers (tenants served
beside the configuration file's), and the one-row version every replica
polls to reload them.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_MYSQL: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin", "mysql_engine": "InnoDB"}
_LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")  # also schema.Json's column


def _text(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, _LONG_TEXT, nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("name", sa.String(64), primary_key=True),
        _text("display_name"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        **_MYSQL,
    )
    op.create_table(
        "oauth_configs",
        sa.Column("organization", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        _text("client_id"),
        _text("client_secret"),
        _text("issuer", nullable=True),
        _text("domain", nullable=True),
        _text("authorization_endpoint", nullable=True),
        _text("token_endpoint", nullable=True),
        _text("userinfo_endpoint", nullable=True),
        _text("scopes", nullable=True),
        sa.Column("user_id_claim", sa.String(255), nullable=True),
        sa.Column("token_auth_method", sa.String(32), nullable=True),
        sa.Column("pkce", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.ForeignKeyConstraint(["organization"], ["organizations.name"], name="oauth_configs_organization"),
        **_MYSQL,
    )
    op.create_table(
        "servers",
        sa.Column("slug", sa.String(64), primary_key=True),
        sa.Column("organization", sa.String(64), nullable=False),
        sa.Column("oauth_config", sa.String(64), nullable=False),
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("resource", sa.String(512), nullable=False),
        _text("scopes"),
        _text("required_scopes"),
        _text("policy"),
        _text("backend", nullable=True),
        sa.Column("forward_upstream_token_header", sa.String(255), nullable=True),
        _text("resource_name", nullable=True),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.ForeignKeyConstraint(["organization"], ["organizations.name"], name="servers_organization"),
        sa.ForeignKeyConstraint(["organization", "oauth_config"], ["oauth_configs.organization", "oauth_configs.name"],
                                name="servers_oauth_config"),
        **_MYSQL,
    )
    op.create_index("servers_by_issuer", "servers", ["issuer"], unique=True)
    op.create_index("servers_by_resource", "servers", ["resource"], unique=True)
    op.create_index("servers_by_oauth_config", "servers", ["organization", "oauth_config"])
    op.create_table(
        "directory_version",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        **_MYSQL,
    )


def downgrade() -> None:
    for table in ("directory_version", "servers", "oauth_configs", "organizations"):
        op.drop_table(table)
