"""Store calls under load (ASGI): no more run at once than the store has
pooled connections, so a burst reuses those instead of opening and closing
a connection per call."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import event
from sqlalchemy.pool import NullPool, QueuePool, StaticPool

from mcp_oauth_proxy.adapters.asgi import BearerGuard
from mcp_oauth_proxy.adapters.site import Site
from mcp_oauth_proxy.core.effects import GetAccessToken
from mcp_oauth_proxy.core.store import StoreTraits
from mcp_oauth_proxy.runtime import async_performer
from mcp_oauth_proxy.storage.crypto import KeyRing
from mcp_oauth_proxy.storage.open import open_store
from mcp_oauth_proxy.storage.sql import POOL_SIZE, SqlStore, make_engine
from mcp_oauth_proxy.storage.token_cache import TokenCache
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


async def test_a_token_cache_and_its_store_share_one_bound(tmp_path: Path, anyio_backend: str) -> None:
    # One connection pool, so one limiter, whichever wrapper a guard is given.
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", KeyRing.generate())
    opened: list[object] = []
    event.listen(store.engine, "connect", lambda conn, record: opened.append(conn))  # type: ignore[attr-defined]
    cached = BearerGuard(never, Site([tenant()], TokenCache(store, 60), b"k" * 32))
    bare = BearerGuard(never, Site([tenant()], store, b"k" * 32))
    async with anyio.create_task_group() as tasks:  # unknown tokens: every lookup asks the database
        tasks.start_soon(_burst, cached, 150)
        tasks.start_soon(_burst, bare, 150)
    assert 1 <= len(opened) <= POOL_SIZE
    store.engine.dispose()  # type: ignore[attr-defined]


async def test_a_store_that_cannot_key_a_limiter_still_works(anyio_backend: str) -> None:
    @dataclasses.dataclass  # unhashable
    class Plain:
        traits: StoreTraits = StoreTraits(concurrency=2)

        def get_access_token(self, tenant: str, token_hash: str) -> None:
            return None

    perform = async_performer(Plain(), None, store_blocks=True)  # type: ignore[arg-type]
    assert await perform(GetAccessToken("acme", "0" * 64)) is None


def test_one_app_serves_under_asyncio_then_trio(tmp_path: Path) -> None:
    # A limiter belongs to one event loop: each run must get its own.
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", KeyRing.generate())
    guard = BearerGuard(never, Site([tenant()], store, b"k" * 32))
    for backend in ("asyncio", "trio", "asyncio"):
        assert anyio.run(_burst, guard, 30, backend=backend) == [401] * 30, backend
    store.engine.dispose()  # type: ignore[attr-defined]


def test_engines_with_pools_of_their_own(tmp_path: Path) -> None:
    # NullPool (say, behind PgBouncer): no pool size, so anyio's own bound.
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}", poolclass=NullPool)
    assert SqlStore(engine, KeyRing.generate()).traits.concurrency is None
    assert SqlStore(make_engine(f"sqlite:///{tmp_path / 'b.db'}"), KeyRing.generate()).traits.concurrency == POOL_SIZE
    # A pool made by the caller takes no sizes from us.
    made = QueuePool(lambda: sqlite3.connect(tmp_path / "c.db", check_same_thread=False), pool_size=3)
    assert SqlStore(make_engine(f"sqlite:///{tmp_path / 'c.db'}", pool=made), KeyRing.generate()).traits.concurrency == 3
    # One shared connection: one call at a time.
    static = make_engine(f"sqlite:///{tmp_path / 'd.db'}", poolclass=StaticPool)
    assert SqlStore(static, KeyRing.generate()).traits.concurrency == 1
