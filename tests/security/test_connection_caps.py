"""No one address holds every connection the server can: a hostile review
filled the descriptor limit from one address with 20,000 half-sent request
heads, and every other client was refused until they were closed. Past
``max_connections_per_address`` (and ``max_connections`` in all) a new
connection is closed as soon as it is accepted; the trusted proxies' are
counted in all only. On the default server and on ``--trio``, through a
real ``serve`` process."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from served import LOOPS, Served, closed_within, serve

from mcp_oauth_proxy.connection_caps import RESERVE, ConnectionCaps, default_total

CAP = 8


@pytest.fixture(scope="module", params=LOOPS)
def capped(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp: Path = tmp_path_factory.mktemp(f"caps-{request.param}")
    with serve(tmp, request.param, server=f"max_connections_per_address = {CAP}\nkeep_alive_timeout = 30") as s:
        yield s


def _idle(served: Served, count: int, stack: contextlib.ExitStack) -> list[socket.socket]:
    """``count`` connections each holding a request head half sent."""
    socks = []
    for _ in range(count):
        sock = stack.enter_context(served.connect())
        sock.sendall(b"GET / HTTP/1.1\r\nhost: " + served.host + b"\r\n")
        socks.append(sock)
    return socks


def _answered(served: Served) -> bool:
    try:
        return httpx.get(f"{served.base}/.well-known/oauth-authorization-server", timeout=2,
                         trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def test_one_address_holds_no_more_than_its_cap(capped: Served) -> None:
    with contextlib.ExitStack() as stack:
        held = _idle(capped, CAP, stack)
        extra = stack.enter_context(capped.connect())
        assert closed_within(extra, 2.0) is not None, "a connection past the cap was kept"
        assert all(closed_within(sock, 0.2) is None for sock in held), "a connection within the cap was closed"
        assert not _answered(capped)  # the same address: refused too
        held[0].close()
        # Its place is free once the server has seen it go.
        assert any(_answered(capped) for _ in range(20))
    assert _answered(capped)


def test_connections_that_ended_are_no_longer_counted(capped: Served) -> None:
    """Whatever became of them: answered, refused WebSocket handshakes (on
    uvicorn another protocol takes the connection over), cut off."""
    handshake = (b"GET /mcp HTTP/1.1\r\nhost: " + capped.host + b"\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                 b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n")
    for _ in range(3 * CAP):
        with capped.connect() as sock:
            sock.sendall(handshake)
            sock.settimeout(5)
            assert sock.recv(65536)  # refused: MCP speaks streamable HTTP
    for _ in range(3 * CAP):
        with capped.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nhost: " + capped.host + b"\r\n")  # cut off half-way
    time.sleep(1.0)  # the server sees the last of them go
    with contextlib.ExitStack() as stack:
        held = _idle(capped, CAP, stack)
        assert all(closed_within(sock, 0.5) is None for sock in held), "ended connections are still counted"


def test_the_cap_is_per_address() -> None:
    caps = ConnectionCaps(total=0, per_address=2, trusted=["10.0.0.1"])
    assert caps.admit("192.0.2.1") and caps.admit("192.0.2.1") and not caps.admit("192.0.2.1")
    assert caps.admit("192.0.2.2")
    # IPv6: by /64, as rate limits count it.
    assert caps.admit("2001:db8::1") and caps.admit("2001:db8::2") and not caps.admit("2001:db8::3")
    assert caps.admit("2001:db8:0:1::1")
    # Every client comes through a trusted proxy: its address is not capped.
    assert all(caps.admit("10.0.0.1") for _ in range(10))
    caps.release("192.0.2.1")
    assert caps.admit("192.0.2.1") and not caps.admit("192.0.2.1")


def test_the_cap_in_all_leaves_descriptors_for_the_rest() -> None:
    caps = ConnectionCaps(total=3, per_address=0)
    assert all(caps.admit(f"192.0.2.{i}") for i in range(3)) and not caps.admit("192.0.2.9")
    caps.release("192.0.2.0")
    assert caps.admit("192.0.2.9")
    assert default_total(1024) == (1024 - RESERVE) // 2 and default_total(300) == 64 and default_total(None) == 0
