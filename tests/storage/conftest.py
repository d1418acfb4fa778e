"""Backends for the storage tests: memory, SQLite (a temporary file, and in
memory), PostgreSQL and MariaDB on 127.0.0.1, each test with an empty
database of its own (see databases.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from databases import isolated_database

from mcp_oauth_proxy.storage.crypto import KeyRing
from mcp_oauth_proxy.storage.open import open_store

SQL_BACKENDS = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgresql),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
]
SERVER_BACKENDS = SQL_BACKENDS[1:]
ALL_BACKENDS = ["memory", "sqlite-memory", *SQL_BACKENDS]


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.generate("k1")


@pytest.fixture(params=ALL_BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from isolated_database(request.param, tmp_path)


@pytest.fixture(params=SQL_BACKENDS)
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from isolated_database(request.param, tmp_path)


@pytest.fixture
def store(url: str, ring: KeyRing) -> Iterator[object]:
    opened = open_store(url, ring)
    yield opened
    engine = getattr(opened, "engine", None)
    if engine is not None:
        engine.dispose()


@pytest.fixture(params=SERVER_BACKENDS)
def server_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from isolated_database(request.param, tmp_path)
