"""Schema versions: a table of the migrations applied, and the list of them.

A new, empty database is brought to the latest version on first open. An
existing database with an older schema is upgraded only when asked
(``mcp-oauth-proxy db upgrade``), so replicas of an older release are never
surprised by a schema changed under them.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import attrs
from sqlalchemy import BigInteger, Column, Connection, Engine, Integer, MetaData, String, Table, inspect, select, text

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
    apply: Callable[[Connection], None]


def _initial(conn: Connection) -> None:
    # Creates the tables as schema.py defines them. When a later migration
    # changes a table, give this one a frozen copy of the version-1 tables.
    schema.metadata.create_all(conn)


MIGRATIONS: tuple[Migration, ...] = (Migration(1, "initial schema", _initial),)


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
        applied = []
        if version == 0:
            _versions.create(conn, checkfirst=True)
        for migration in migrations:
            if migration.version > version:
                migration.apply(conn)
                conn.execute(_versions.insert().values(
                    version=migration.version, description=migration.description, applied_at=int(time.time())))
                applied.append(migration.version)
        return applied
