"""The admin API on a memory store, SQLite and PostgreSQL (which refuses
some text outright), with a global token."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from admin_client import T0, Admin
from databases import isolated_database

from mcp_oauth_proxy.admin.api import AdminApi
from mcp_oauth_proxy.admin.operations import Management
from mcp_oauth_proxy.admin.tokens import new_token
from mcp_oauth_proxy.storage.crypto import KeyRing
from mcp_oauth_proxy.storage.open import open_store


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    for url in isolated_database(request.param, tmp_path):
        opened = open_store(url, KeyRing.generate("k1"))
        yield opened
        engine = getattr(opened, "engine", None)
        if engine is not None:
            engine.dispose()


@pytest.fixture
def admin(store: Any) -> Admin:
    token, record = new_token(None, "root", T0)
    store.create_admin_token(token=record)
    return Admin(AdminApi(Management(store, clock=lambda: T0)), store, token)


