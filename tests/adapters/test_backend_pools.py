"""The forwarder's pools on asyncio (adapters/backend_http.py): a backend
connection is never shared by two people, one person's requests share
theirs, and the pools of people gone quiet are closed, never one with a
request under way. A backend on a plain asyncio server in the test's loop."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator

import pytest

from mcp_oauth_proxy.adapters import backend_http
from mcp_oauth_proxy.adapters.backend_http import DEFAULT_TIMEOUT, AiohttpPool

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class _Backend:
    """Answers every request with ``ok`` (``/slow``: after ``release`` is
    set); records the client port each request came from."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.release = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = writer.get_extra_info("peername")[1]
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.ports.append(port)
                if b" /slow " in head:
                    await self.release.wait()
                writer.write(ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def backend() -> AsyncIterator[tuple[_Backend, str]]:
    server = _Backend()
    url = await server.start()
    yield server, url
    assert server.server is not None
    server.server.close()


async def _get(pool: AiohttpPool, person: tuple[str, str], url: str) -> bytes:
    answer = await pool.send(person, "GET", url, [(b"host", b"backend.test")], None, None)
    body = b"".join([chunk async for chunk in answer.chunks()])
    await answer.aclose()
    return body


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_two_people_never_share_a_connection_one_person_reuses_theirs(
        backend: tuple[_Backend, str], anyio_backend: str) -> None:
    server, url = backend
    pool = AiohttpPool(DEFAULT_TIMEOUT, ssl.create_default_context())
    try:
        for person in (("acme", "alice"), ("acme", "bob"), ("acme", "alice"), ("other", "alice"), ("acme", "bob")):
            assert await _get(pool, person, f"{url}/mcp") == b"ok"
    finally:
        await pool.aclose()
    alice, bob, alice_again, other_alice, bob_again = server.ports
    assert alice == alice_again and bob == bob_again  # kept alive for its person
    assert len({alice, bob, other_alice}) == 3  # a person is (tenant, user id)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_pools_of_people_gone_quiet_are_closed_but_not_one_in_use(
        backend: tuple[_Backend, str], anyio_backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    server, url = backend
    monkeypatch.setattr(backend_http, "KEEPALIVE_SECONDS", 0.2)
    pool = AiohttpPool(DEFAULT_TIMEOUT, ssl.create_default_context())
    try:
        await _get(pool, ("acme", "quiet"), f"{url}/mcp")
        slow = asyncio.ensure_future(_get(pool, ("acme", "busy"), f"{url}/slow"))
        while len(server.ports) < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.2)  # past the sweep's second and the keep-alive
        started = time.monotonic()
        await _get(pool, ("acme", "newcomer"), f"{url}/mcp")
        assert time.monotonic() - started < 1.0
        assert set(pool._people) == {("acme", "busy"), ("acme", "newcomer")}
        server.release.set()
        assert await slow == b"ok"  # its pool was left open under it
    finally:
        await pool.aclose()
