"""Store calls under load (ASGI): no more run at once than the store has
pooled connections, so a burst reuses those instead of opening and closing
a connection per call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import event

from mcp_oauth_proxy.adapters.asgi import BearerGuard
from mcp_oauth_proxy.adapters.site import Site
from mcp_oauth_proxy.storage.crypto import KeyRing
from mcp_oauth_proxy.storage.open import open_store
from mcp_oauth_proxy.storage.sql import POOL_SIZE
from support import tenant

pytestmark = pytest.mark.anyio


async def never(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("no token here is valid")


async def test_a_burst_of_guard_lookups_reuses_the_pooled_connections(tmp_path: Path, anyio_backend: str) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", KeyRing.generate())
    opened: list[object] = []
    event.listen(store.engine, "connect", lambda conn, record: opened.append(conn))  # type: ignore[attr-defined]
    site = Site([tenant()], store, b"k" * 32)
    guard = BearerGuard(never, site)
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
        for i in range(200):
            tasks.start_soon(one, i)
    assert statuses == [401] * 200  # each looked up in the database, and refused
    assert 1 <= len(opened) <= POOL_SIZE
    store.engine.dispose()  # type: ignore[attr-defined]
