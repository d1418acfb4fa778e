"""The database servers tests run against: PostgreSQL and MariaDB on
127.0.0.1, and an empty database of its own for one test (PostgreSQL: a
schema; MariaDB: a database), dropped afterwards; or SQLite and memory.

A server that cannot be reached skips its tests, unless
MCP_OAUTH_PROXY_REQUIRE_DATABASES=1 (CI), where it fails them.
"""

from __future__ import annotations

import functools
import os
import secrets
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy

from mcp_oauth_proxy.storage.sql import make_engine

SERVERS = {
    "postgresql": ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://root@127.0.0.1/test"),
    "mariadb": ("mysql://root@127.0.0.1:3306/test",),
}


@functools.cache
def _server(kind: str) -> tuple[str | None, str]:
    """The first URL of ``kind`` that answers, or None and why not."""
    reason = ""
    for url in SERVERS[kind]:
        engine = make_engine(url, timeout=3)
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
            return url, ""
        except sqlalchemy.exc.DBAPIError as error:
            reason = f"{url}: {type(error.orig).__name__}"
        finally:
            engine.dispose()
    return None, reason


def server_url(kind: str) -> str:
    url, reason = _server(kind)
    if url is None:
        if os.environ.get("MCP_OAUTH_PROXY_REQUIRE_DATABASES") == "1":
            pytest.fail(f"{kind} is required (MCP_OAUTH_PROXY_REQUIRE_DATABASES=1) but unreachable: {reason}")
        pytest.skip(f"{kind} is not reachable ({reason})")
    return url


def isolated_database(kind: str, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database for one test; dropped afterwards."""
    if kind == "memory":
        yield "memory://"
        return
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    if kind == "sqlite-memory":
        yield "sqlite://"  # a database of the engine's own
        return
    base = server_url(kind)
    name = f"t_{secrets.token_hex(6)}"
    admin = make_engine(base)
    ddl = ("SCHEMA", f"?options=-csearch_path%3D{name}") if kind == "postgresql" else ("DATABASE", None)
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE {ddl[0]} {name}"))
    try:
        yield base + ddl[1] if ddl[1] else base.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP {ddl[0]} {name}" + (" CASCADE" if kind == "postgresql" else "")))
        admin.dispose()
