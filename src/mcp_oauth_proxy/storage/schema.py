"""The SQL tables, one per record of :mod:`..core.models`.

Columns are named after the record's fields, so a row maps to a record and
back without a per-table mapping. Keys are (tenant, id or hash): every
lookup on the hot path is a primary-key or unique-index lookup. Secrets
never rest here in plain text: our tokens, codes and client secrets are
hashes, and the ``upstream`` and ``upstream_code_verifier`` columns hold
ciphertexts from :mod:`.crypto`.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Dialect,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeDecorator

metadata = MetaData()

# MariaDB compares strings case-insensitively by default; ids and hashes are
# case-sensitive, so every table there uses the binary collation.
_MYSQL: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin", "mysql_engine": "InnoDB"}

_LONG_TEXT = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


class Json(TypeDecorator[Any]):
    """Tuples, dicts and nested records of a row, as JSON text."""

    impl = _LONG_TEXT
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


def _tenant() -> Column[str]:
    return Column("tenant", String(128), primary_key=True)


def _key(name: str, length: int = 64) -> Column[str]:
    return Column(name, String(length), primary_key=True)


def _str(name: str, length: int = 255, nullable: bool = False) -> Column[str]:
    return Column(name, String(length), nullable=nullable)


def _text(name: str, nullable: bool = False) -> Column[str]:
    return Column(name, _LONG_TEXT, nullable=nullable)


def _time(name: str, nullable: bool = False) -> Column[int]:
    return Column(name, BigInteger, nullable=nullable)


clients = Table(
    "clients", metadata,
    _tenant(), _key("client_id", 255),
    Column("redirect_uris", Json, nullable=False),
    _str("token_endpoint_auth_method", 64),
    Column("grant_types", Json, nullable=False),
    Column("response_types", Json, nullable=False),
    _str("application_type", 32),
    _time("created_at"),
    _text("client_name", nullable=True),
    _text("client_uri", nullable=True),
    _text("scope", nullable=True),
    _str("secret_hash", 64, nullable=True),
    _time("expires_at", nullable=True),  # NULL once used: never lapses
    # private_key_jwt: the client's public keys (a JWK Set, JSON) or their URL.
    _text("jwks", nullable=True),
    _text("jwks_uri", nullable=True),
    Index("clients_expiry", "expires_at"),
    **_MYSQL,
)

consent_requests = Table(
    "consent_requests", metadata,
    _tenant(), _key("id_hash"),
    Column("request", Json, nullable=False),
    _str("browser_hash", 64),
    _time("expires_at"),
    Index("consent_requests_expiry", "expires_at"),
    **_MYSQL,
)

auth_sessions = Table(
    "auth_sessions", metadata,
    _tenant(), _key("state_hash"),
    Column("request", Json, nullable=False),
    # The default only serves migration 2, which added the column to a table
    # it had emptied; every session is saved with its browser's hash.
    Column("browser_hash", String(64), nullable=False, server_default=""),
    _text("upstream_issuer", nullable=True),
    _text("upstream_code_verifier"),  # ciphertext (seal_verifier)
    _text("nonce", nullable=True),
    _time("expires_at"),
    Index("auth_sessions_expiry", "expires_at"),
    **_MYSQL,
)

grants = Table(
    "grants", metadata,
    _tenant(), _key("grant_id", 128),
    _text("client_id"),
    _text("user_id"),
    Column("scope", Json, nullable=False),
    _text("resource"),
    # NULL for a grant made without a browser (client credentials, ID-JAG):
    # it has no code and no upstream tokens.
    _str("code_hash", 64, nullable=True),
    Column("claims", Json, nullable=False),
    _text("upstream", nullable=True),  # ciphertext (seal_upstream)
    _time("created_at"),
    _time("expires_at"),
    Column("upstream_version", BigInteger, nullable=False),
    _time("refresh_lease_until", nullable=True),
    Column("revoked", Boolean, nullable=False),
    # When its newest token was issued (None: none yet).
    _time("last_used_at", nullable=True),
    # A replayed code revokes its grant (RFC 6749 §4.1.2): found by the code.
    Index("grants_by_code", "tenant", "code_hash", unique=True),
    Index("grants_expiry", "expires_at"),
    **_MYSQL,
)

codes = Table(
    "codes", metadata,
    _tenant(), _key("code_hash"),
    _str("grant_id", 128),
    _text("client_id"),
    _text("user_id"),
    _text("redirect_uri"),
    Column("redirect_uri_given", Boolean, nullable=False),
    _str("code_challenge", 128),
    Column("scope", Json, nullable=False),
    _text("resource"),
    _time("expires_at"),
    Index("codes_expiry", "expires_at"),
    **_MYSQL,
)


def _token_table(name: str, *extra: Column[Any]) -> Table:
    return Table(
        name, metadata,
        _tenant(), _key("token_hash"),
        _str("grant_id", 128),
        _text("client_id"),
        _text("user_id"),
        Column("scope", Json, nullable=False),
        _text("resource"),
        _time("issued_at"),
        _time("expires_at"),
        *extra,
        Index(f"{name}_expiry", "expires_at"),
        **_MYSQL,
    )


# grant_type: how the token's grant was obtained (core.models.Principal).
access_tokens = _token_table("access_tokens", Column("grant_type", String(64), nullable=False,
                                                     server_default="authorization_code"))
refresh_tokens = _token_table("refresh_tokens", _time("rotated_at", nullable=True),
                              _str("successor_hash", 64, nullable=True))

# Rate-limit windows, keyed by the SHA-256 of the limit's key (which may hold a
# long client_id URL or an address).
counters = Table(
    "counters", metadata,
    _key("key_hash"),
    Column("window_start", BigInteger, primary_key=True, autoincrement=False),
    Column("count", BigInteger, nullable=False),
    _time("expires_at"),
    Index("counters_expiry", "expires_at"),
    **_MYSQL,
)

# What was revoked lately (core.models.Revocation): every process sharing the
# database reads it each second, to forget what it remembers of those tokens.
revocations = Table(
    "revocations", metadata,
    _tenant(), _key("kind", 16), _key("revoked", 128),
    _time("revoked_at"),
    _time("expires_at"),
    Index("revocations_since", "revoked_at"),
    Index("revocations_expiry", "expires_at"),
    **_MYSQL,
)

# The audit log (core.models.AuditEvent): appended to by flows and admin
# actions, listed newest first (by event_id), kept until expires_at. Its
# organization has no foreign key: events outlive what they name.
audit_events = Table(
    "audit_events", metadata,
    # SQLite numbers only an INTEGER PRIMARY KEY by itself (AUTOINCREMENT,
    # below: never again a number it gave, once swept).
    Column("event_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    _time("at"),
    _str("event", 64),
    _str("tenant", 64, nullable=True),
    _str("organization", 64, nullable=True),
    _text("client_id", nullable=True),
    _text("user_id", nullable=True),
    _str("actor", 64, nullable=True),
    Column("detail", Json, nullable=False),
    _time("expires_at"),
    Index("audit_events_by_tenant", "tenant", "event_id"),
    Index("audit_events_by_organization", "organization", "event_id"),
    Index("audit_events_expiry", "expires_at"),
    sqlite_autoincrement=True,
    **_MYSQL,
)

# The tables delete_expired sweeps.
EXPIRING = (consent_requests, auth_sessions, codes, access_tokens, refresh_tokens, counters, clients, grants,
            revocations, audit_events)

# -- the directory: organizations, their OAuth configurations and servers ----------

organizations = Table(
    "organizations", metadata,
    _key("name", 64),
    _text("display_name"),
    _time("created_at"),
    **_MYSQL,
)

# An upstream provider of an organization; client_secret is a ciphertext
# (crypto.seal_client_secret, bound to organization and name).
oauth_configs = Table(
    "oauth_configs", metadata,
    _key("organization", 64), _key("name", 64),
    _str("kind", 16),
    _text("client_id"),
    _text("client_secret"),
    _text("issuer", nullable=True),
    _text("domain", nullable=True),
    _text("authorization_endpoint", nullable=True),
    _text("token_endpoint", nullable=True),
    _text("userinfo_endpoint", nullable=True),
    Column("scopes", Json, nullable=True),
    _str("user_id_claim", 255, nullable=True),
    _str("token_auth_method", 32, nullable=True),
    Column("pkce", Boolean, nullable=False),
    _time("updated_at"),
    _str("tenant", 64, nullable=True),
    _str("user_pool_id", 64, nullable=True),
    ForeignKeyConstraint(["organization"], ["organizations.name"], name="oauth_configs_organization"),
    **_MYSQL,
)

# A tenant kept in the database. Its issuer and its resource are each its
# own: no two servers answer at one place.
servers = Table(
    "servers", metadata,
    _key("slug", 64),
    _str("organization", 64),
    _str("oauth_config", 64),
    _str("issuer", 512),
    _str("resource", 512),
    Column("scopes", Json, nullable=False),
    Column("required_scopes", Json, nullable=False),
    Column("policy", Json, nullable=False),
    _text("backend", nullable=True),
    _str("forward_upstream_token_header", 255, nullable=True),
    _text("resource_name", nullable=True),
    Column("id_jag_issuers", Json, nullable=False),
    _time("updated_at"),
    ForeignKeyConstraint(["organization"], ["organizations.name"], name="servers_organization"),
    ForeignKeyConstraint(["organization", "oauth_config"], ["oauth_configs.organization", "oauth_configs.name"],
                         name="servers_oauth_config"),
    Index("servers_by_issuer", "issuer", unique=True),
    Index("servers_by_resource", "resource", unique=True),
    Index("servers_by_oauth_config", "organization", "oauth_config"),
    **_MYSQL,
)

# One row (id 1): the directory's version, moved in the transaction of every
# change above; every replica reads it each second.
directory_version = Table(
    "directory_version", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
    **_MYSQL,
)

# Credentials of the admin API: only their hashes. One of an organization
# sees and changes that organization's records only.
admin_tokens = Table(
    "admin_tokens", metadata,
    _key("token_id", 64),
    _str("token_hash", 64),
    _text("label"),
    _str("organization", 64, nullable=True),
    _time("created_at"),
    ForeignKeyConstraint(["organization"], ["organizations.name"], name="admin_tokens_organization"),
    Index("admin_tokens_by_hash", "token_hash", unique=True),
    **_MYSQL,
)
