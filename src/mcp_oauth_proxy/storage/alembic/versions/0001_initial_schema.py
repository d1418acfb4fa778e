"""The initial schema: version 1 of the hand-kept schema_version table.

A frozen copy of the tables as they were then (schema.py before the login
sessions were bound to a browser); a later change goes in a revision of
its own, never here.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Every table on MariaDB/MySQL compares ids and hashes case-sensitively.
_MYSQL: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin", "mysql_engine": "InnoDB"}
_LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")  # also schema.Json's column


def _tenant() -> sa.Column[Any]:
    return sa.Column("tenant", sa.String(128), primary_key=True)


def _key(name: str, length: int = 64) -> sa.Column[Any]:
    return sa.Column(name, sa.String(length), primary_key=True)


def _str(name: str, length: int = 255, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.String(length), nullable=nullable)


def _text(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, _LONG_TEXT, nullable=nullable)


def _time(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.BigInteger, nullable=nullable)


def _token_table(name: str, *extra: sa.Column[Any]) -> None:
    op.create_table(
        name,
        _tenant(), _key("token_hash"),
        _str("grant_id", 128),
        _text("client_id"),
        _text("user_id"),
        _text("scope"),
        _text("resource"),
        _time("issued_at"),
        _time("expires_at"),
        *extra,
        **_MYSQL,
    )
    op.create_index(f"{name}_expiry", name, ["expires_at"])


def upgrade() -> None:
    op.create_table(
        "clients",
        _tenant(), _key("client_id", 255),
        _text("redirect_uris"),
        _str("token_endpoint_auth_method", 64),
        _text("grant_types"),
        _text("response_types"),
        _str("application_type", 32),
        _time("created_at"),
        _text("client_name", nullable=True),
        _text("client_uri", nullable=True),
        _text("scope", nullable=True),
        _str("secret_hash", 64, nullable=True),
        _time("expires_at", nullable=True),
        **_MYSQL,
    )
    op.create_index("clients_expiry", "clients", ["expires_at"])

    op.create_table(
        "consent_requests",
        _tenant(), _key("id_hash"),
        _text("request"),
        _str("browser_hash", 64),
        _time("expires_at"),
        **_MYSQL,
    )
    op.create_index("consent_requests_expiry", "consent_requests", ["expires_at"])

    op.create_table(
        "auth_sessions",
        _tenant(), _key("state_hash"),
        _text("request"),
        _text("upstream_issuer", nullable=True),
        _text("upstream_code_verifier"),
        _text("nonce", nullable=True),
        _time("expires_at"),
        **_MYSQL,
    )
    op.create_index("auth_sessions_expiry", "auth_sessions", ["expires_at"])

    op.create_table(
        "grants",
        _tenant(), _key("grant_id", 128),
        _text("client_id"),
        _text("user_id"),
        _text("scope"),
        _text("resource"),
        _str("code_hash", 64),
        _text("claims"),
        _text("upstream"),
        _time("created_at"),
        _time("expires_at"),
        sa.Column("upstream_version", sa.BigInteger, nullable=False),
        _time("refresh_lease_until", nullable=True),
        sa.Column("revoked", sa.Boolean, nullable=False),
        **_MYSQL,
    )
    op.create_index("grants_by_code", "grants", ["tenant", "code_hash"], unique=True)
    op.create_index("grants_expiry", "grants", ["expires_at"])

    op.create_table(
        "codes",
        _tenant(), _key("code_hash"),
        _str("grant_id", 128),
        _text("client_id"),
        _text("user_id"),
        _text("redirect_uri"),
        sa.Column("redirect_uri_given", sa.Boolean, nullable=False),
        _str("code_challenge", 128),
        _text("scope"),
        _text("resource"),
        _time("expires_at"),
        **_MYSQL,
    )
    op.create_index("codes_expiry", "codes", ["expires_at"])

    _token_table("access_tokens")
    _token_table("refresh_tokens", _time("rotated_at", nullable=True))

    op.create_table(
        "counters",
        _key("key_hash"),
        sa.Column("window_start", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        _time("expires_at"),
        **_MYSQL,
    )
    op.create_index("counters_expiry", "counters", ["expires_at"])


def downgrade() -> None:
    for table in ("counters", "refresh_tokens", "access_tokens", "codes", "grants", "auth_sessions",
                  "consent_requests", "clients"):
        op.drop_table(table)
