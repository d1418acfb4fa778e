"""Schema versions: a table of the migrations applied, and the list of them.

A new, empty database is created at the latest version on first open (the
tables as schema.py defines them). An
existing database with an older schema is upgraded only when asked
(``mcp-oauth-proxy db upgrade``), so replicas of an older release are never
surprised by a schema changed under them.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import attrs
from sqlalchemy import BigInteger, Column, Connection, Engine, Integer, MetaData, String, Table, delete, inspect, select, text

from . import schema

UPGRADE_COMMAND = "mcp-oauth-proxy db upgrade"

_versions = Table(
    "schema_version",
    MetaData(),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", String(255), nullable=False),
    Column("applied_at", BigInteger, nullable=False),
    **schema._MYSQL,
)


class SchemaError(Exception):
    """The database's schema does not fit this program."""


class SchemaOutdated(SchemaError):
    def __init__(self, version: int, latest: int) -> None:
        super().__init__(
            f"the database schema is at version {version}, this program needs version {latest}: "
            f"run `{UPGRADE_COMMAND}` (back up the database first)"
        )
        self.version = version
        self.latest = latest


@attrs.frozen
class Migration:
    version: int
    description: str
    # Brings a database at the version before to this one; None for the
    # initial schema, which only a new database gets (created whole).
    apply: Callable[[Connection], None] | None


def _bind_sessions_to_browsers(conn: Connection) -> None:
    # A login begun before the upgrade has no browser to check at its
    # callback: it is dropped, and the person starts again.
    conn.execute(delete(schema.auth_sessions))
    conn.execute(text("ALTER TABLE auth_sessions ADD COLUMN browser_hash VARCHAR(64) NOT NULL DEFAULT ''"))


def _name_successors(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE refresh_tokens ADD COLUMN successor_hash VARCHAR(64) NULL"))


def _record_revocations(conn: Connection) -> None:
    schema.revocations.create(conn, checkfirst=True)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", None),
    Migration(2, "login sessions bound to the browser that consented", _bind_sessions_to_browsers),
    Migration(3, "refresh tokens name their successor", _name_successors),
    Migration(4, "revocations recorded for other processes to follow", _record_revocations),
)


def version_of(conn: Connection) -> int:
    """The schema version applied; 0 for an empty database."""
    if not inspect(conn).has_table(_versions.name):
        existing = set(inspect(conn).get_table_names()) & set(schema.metadata.tables)
        if existing:
            raise SchemaError(f"the database holds tables {sorted(existing)} but no schema version")
        return 0
    return conn.execute(select(_versions.c.version).order_by(_versions.c.version.desc()).limit(1)).scalar() or 0


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A transaction holding the migration lock: two processes starting at
    once on an empty database do not both create it."""
    name = engine.dialect.name
    with engine.execution_options(sqlite_write=True).connect() as conn:
        if name in ("mysql", "mariadb"):
            # MySQL's DDL commits by itself, so the lock is a named one.
            if conn.execute(text("SELECT GET_LOCK('mcp_oauth_proxy_migrate', 60)")).scalar() != 1:
                raise SchemaError("another process holds the migration lock")
            conn.commit()
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.execute(text("SELECT RELEASE_LOCK('mcp_oauth_proxy_migrate')"))
                conn.commit()
            return
        with conn.begin():
            if name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(7228461190)"))
            # SQLite: the write transaction (BEGIN IMMEDIATE) is the lock.
            yield conn


def migrate(engine: Engine, *, upgrade: bool = False, migrations: Sequence[Migration] | None = None) -> list[int]:
    """Bring the schema to the latest version; the versions applied.

    An empty database is always migrated; an older one only with ``upgrade``,
    else :class:`SchemaOutdated` names the command to run.
    """
    migrations = MIGRATIONS if migrations is None else migrations
    latest = migrations[-1].version
    with _locked(engine) as conn:
        version = version_of(conn)
        if version > latest:
            raise SchemaError(f"the database schema is at version {version}, newer than this program's {latest}")
        if 0 < version < latest and not upgrade:
            raise SchemaOutdated(version, latest)
        if version == 0:
            # A new database is created as schema.py defines it now, which
            # holds every migration's change already: they are recorded, not run.
            _versions.create(conn, checkfirst=True)
            schema.metadata.create_all(conn)
        applied = []
        for migration in migrations:
            if migration.version > version:
                if version > 0 and migration.apply is not None:
                    migration.apply(conn)
                conn.execute(_versions.insert().values(
                    version=migration.version, description=migration.description, applied_at=int(time.time())))
                applied.append(migration.version)
        return applied
