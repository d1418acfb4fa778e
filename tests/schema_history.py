"""Databases at an older schema, and a program with a newer one.

``legacy_database``: a database as a release before Alembic left it (the
revisions up to its version, then its own ``schema_version`` table in
place of Alembic's). ``add_revision``: the program's migrations with one
more revision after today's head, in a copy of the scripts.
"""

from __future__ import annotations

import shutil
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy
from alembic import command

from mcp_oauth_proxy.storage import migrations
from mcp_oauth_proxy.storage.schema import _MYSQL
from mcp_oauth_proxy.storage.sql import make_engine

# The legacy table exactly as storage/migrations.py created it before Alembic.
LEGACY_VERSIONS = sqlalchemy.Table(
    "schema_version",
    sqlalchemy.MetaData(),
    sqlalchemy.Column("version", sqlalchemy.Integer, primary_key=True, autoincrement=False),
    sqlalchemy.Column("description", sqlalchemy.String(255), nullable=False),
    sqlalchemy.Column("applied_at", sqlalchemy.BigInteger, nullable=False),
    **_MYSQL,
)
_DESCRIPTIONS = {1: "initial schema", 2: "login sessions bound to the browser that consented",
                 3: "refresh tokens name their successor"}


def upgrade_to(url: str, revision: str) -> None:
    """Run the revisions from an empty database up to ``revision``."""
    engine = make_engine(url, bound_statements=False)
    try:
        with engine.execution_options(sqlite_write=True).begin() as conn:
            command.upgrade(migrations.alembic_config(conn), revision)
    finally:
        engine.dispose()


def legacy_database(url: str, version: int) -> None:
    """An empty database brought to ``version`` (1 to 3) as a release before
    Alembic would have: its tables, and the schema_version table saying so."""
    upgrade_to(url, f"{version:04d}")
    engine = make_engine(url)
    try:
        with engine.execution_options(sqlite_write=True).begin() as conn:
            conn.execute(sqlalchemy.text("DROP TABLE alembic_version"))
            LEGACY_VERSIONS.create(conn)
            conn.execute(LEGACY_VERSIONS.insert(), [
                {"version": v, "description": _DESCRIPTIONS[v], "applied_at": int(time.time())}
                for v in range(1, version + 1)])
    finally:
        engine.dispose()


def add_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upgrade: str = "pass") -> int:
    """The program's scripts, copied, with a revision after the head whose
    ``upgrade()`` body is ``upgrade`` (``op`` and ``sa`` in scope); its
    version."""
    scripts = tmp_path / "alembic-scripts"
    shutil.copytree(migrations.SCRIPTS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    head = migrations.revisions()[-1]
    later = migrations.number(head) + 1
    (scripts / "versions" / f"{later:04d}_test.py").write_text(
        f"import sqlalchemy as sa\nfrom alembic import op\n\n"
        f"revision = '{later:04d}'\ndown_revision = {head!r}\nbranch_labels = None\ndepends_on = None\n\n\n"
        f"def upgrade():\n{textwrap.indent(upgrade, '    ')}\n")
    monkeypatch.setattr(migrations, "SCRIPTS", scripts)
    return later
