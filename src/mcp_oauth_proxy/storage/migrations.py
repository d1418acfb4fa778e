"""Schema versions, kept by Alembic: the revisions live in ``alembic/versions``
(0001, 0002, … : a revision's number is the schema's version).

A new, empty database is created at the latest version on first open (the
tables as schema.py defines them) and stamped with the head revision. An
existing database with an older schema is upgraded only when asked
(``mcp-oauth-proxy db upgrade``), so replicas of an older release are never
surprised by a schema changed under them.

Releases before Alembic kept the version in a ``schema_version`` table of
their own (versions 1 to 3, which are revisions 0001 to 0003): such a
database is recognised as at that revision, refused untouched like any older
one, and on ``db upgrade`` stamped, upgraded and rid of that table (a
release before Alembic then refuses it, tables but no version, rather than
run on a schema it does not know).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    func,
    inspect,
    select,
    text,
)

from . import schema


class _EveryStart(logging.Filter):
    """Alembic's lines on every start (its plugins, its dialect, whether DDL
    is transactional) left out; its 'Running upgrade …' lines stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Context impl", "Will assume"))


logging.getLogger("alembic.runtime.migration").addFilter(_EveryStart())
# Before alembic is imported: its plugins are set up (and logged) then.
logging.getLogger("alembic.runtime.plugins").addFilter(lambda record: record.levelno > logging.INFO)

from alembic import command  # noqa: E402 - after the filters above
from alembic.config import Config  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402

UPGRADE_COMMAND = "mcp-oauth-proxy db upgrade"

# Alembic's scripts (env.py, versions/), shipped inside the package.
SCRIPTS = Path(__file__).with_name("alembic")

# The version table of the releases before Alembic (as they made it); its
# versions 1 to 3 are the revisions 0001 to 0003.
LEGACY_TABLE = "schema_version"
_legacy_versions = Table(
    LEGACY_TABLE,
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


def alembic_config(conn: Connection | None = None) -> Config:
    """Alembic's configuration for our scripts; env.py runs on ``conn``."""
    config = Config(attributes={"connection": conn} if conn is not None else {})
    config.set_main_option("script_location", str(SCRIPTS))
    config.set_main_option("path_separator", "os")
    return config


def compare_server_default(context: MigrationContext, inspected: Any, column: Any, inspected_default: str | None,
                           metadata_default: Any, rendered_metadata_default: str | None) -> bool | None:
    """Autogenerate's server default comparison (``compare_server_default``),
    which takes SQLite's ``('')`` for a default other than ``''``; None:
    Alembic's own comparison decides."""
    if rendered_metadata_default == "" and inspected_default in ("''", "('')"):
        return False
    return None


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """What autogenerate compares: not the table of the releases before Alembic."""
    return not (type_ == "table" and name == LEGACY_TABLE)


def revisions() -> list[str]:
    """The revisions this program knows, oldest first."""
    script = ScriptDirectory.from_config(alembic_config())
    if len(script.get_heads()) != 1:
        raise SchemaError(f"the migrations in {SCRIPTS} have {len(script.get_heads())} heads, not one")
    return [r.revision for r in reversed(list(script.walk_revisions()))]


@functools.lru_cache(maxsize=1)
def head_version() -> int:
    """The newest schema version this program knows (read once)."""
    return number(revisions()[-1])


def number(revision: str) -> int:
    """A revision's schema version: revisions are named 0001, 0002, …"""
    if not revision.isdigit():
        raise SchemaError(f"the database schema is at revision {revision!r}, which this program does not know")
    return int(revision)


def _revision_of(conn: Connection) -> tuple[str | None, bool]:
    """(the revision applied, None for an empty database; whether it is read
    from the table of the releases before Alembic, which has no record of
    its own)."""
    heads = MigrationContext.configure(conn).get_current_heads()
    if len(heads) > 1:
        raise SchemaError(f"the database schema is at several revisions at once: {sorted(heads)}")
    if heads:
        return heads[0], False
    if inspect(conn).has_table(_legacy_versions.name):
        legacy = conn.execute(select(func.max(_legacy_versions.c.version))).scalar()
        if legacy is not None:
            return f"{legacy:04d}", True
    existing = set(inspect(conn).get_table_names()) & set(schema.metadata.tables)
    if existing:
        raise SchemaError(f"the database holds tables {sorted(existing)} but no schema version")
    return None, False


def version_of(conn: Connection) -> int:
    """The schema version applied; 0 for an empty database."""
    revision = _revision_of(conn)[0]
    return 0 if revision is None else number(revision)


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A transaction holding the migration lock: two processes starting at
    once on an empty database do not both create it. Alembic runs on this
    connection, inside this transaction."""
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


def migrate(engine: Engine, *, upgrade: bool = False, progress: Callable[[int], None] = lambda n: None) -> list[int]:
    """Bring the schema to the latest version; the versions applied.

    An empty database is always migrated; an older one only with ``upgrade``,
    else :class:`SchemaOutdated` names the command to run.
    """
    known = revisions()
    with _locked(engine) as conn:
        current, legacy = _revision_of(conn)
        config = alembic_config(conn)
        if current is None:
            # A new database is created as schema.py defines it now, which
            # holds every revision's change already: stamped, not run.
            schema.metadata.create_all(conn)
            command.stamp(config, known[-1])
            return [number(r) for r in known]
        if current not in known:
            version = number(current)  # a name not ours is refused here
            raise SchemaError(f"the database schema is at version {version}, newer than this program's "
                              f"{number(known[-1])}")
        pending = known[known.index(current) + 1:]
        if pending and not upgrade:
            raise SchemaOutdated(number(current), number(known[-1]))
        if legacy:
            command.stamp(config, current)
            _legacy_versions.drop(conn)
        for revision in pending:  # one at a time, for progress; all in this transaction
            command.upgrade(config, revision)
            progress(1)
        return [number(r) for r in pending]
