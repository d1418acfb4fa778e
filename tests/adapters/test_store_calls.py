"""Store calls under load (ASGI): no more run at once than the store has
pooled connections, so a burst reuses those instead of opening and closing
a connection per call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import event
from sqlalchemy.pool import NullPool

from mcp_oauth_proxy.adapters.asgi import BearerGuard
from mcp_oauth_proxy.adapters.site import Site
from mcp_oauth_proxy.storage.crypto import KeyRing
from mcp_oauth_proxy.storage.open import open_store
from mcp_oauth_proxy.storage.sql import POOL_SIZE, SqlStore, make_engine
from support import tenant

pytestmark = pytest.mark.anyio


async def never(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("no token here is valid")


async def _burst(guard: BearerGuard, n: int) -> list[int]:
    """n requests at once, each with a token the database must be asked about."""
    statuses: list[int] = []

    async def one(i: int) -> None:
        scope = {"type": "http", "method": "GET", "scheme": "https", "path": "/mcp", "query_string": b"",
                 "headers": [(b"host", b"acme.example.com"), (b"authorization", f"Bearer mcp_at_unknown{i}".encode())],
                 "client": ("127.0.0.1", 4000), "server": ("acme.example.com", 443)}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await guard(scope, receive, send)

    async with anyio.create_task_group() as tasks:
        for i in range(n):
            tasks.start_soon(one, i)
    return statuses


async def test_a_burst_of_guard_lookups_reuses_the_pooled_connections(tmp_path: Path, anyio_backend: str) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", KeyRing.generate())
    opened: list[object] = []
    event.listen(store.engine, "connect", lambda conn, record: opened.append(conn))  # type: ignore[attr-defined]
    guard = BearerGuard(never, Site([tenant()], store, b"k" * 32))
    assert await _burst(guard, 200) == [401] * 200  # each looked up in the database, and refused
    assert 1 <= len(opened) <= POOL_SIZE
    store.engine.dispose()  # type: ignore[attr-defined]


def test_one_app_serves_under_asyncio_then_trio(tmp_path: Path) -> None:
    # A limiter belongs to one event loop: each run must get its own.
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", KeyRing.generate())
    guard = BearerGuard(never, Site([tenant()], store, b"k" * 32))
    for backend in ("asyncio", "trio", "asyncio"):
        assert anyio.run(_burst, guard, 30, backend=backend) == [401] * 30, backend
    store.engine.dispose()  # type: ignore[attr-defined]


def test_an_engine_without_a_pool_of_its_own_bound(tmp_path: Path) -> None:
    # NullPool (say, behind PgBouncer): no pool size, so anyio's own bound.
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}", poolclass=NullPool)
    assert SqlStore(engine, KeyRing.generate()).concurrency is None
    assert SqlStore(make_engine(f"sqlite:///{tmp_path / 'b.db'}"), KeyRing.generate()).concurrency == POOL_SIZE
