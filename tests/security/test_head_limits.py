"""A request head is held to MAX_HEAD (16 KiB) however it comes: in one
read, a line at a time, or pipelined behind a request whose answer is
still under way (a long tool call, an MCP event stream); so are a chunked
body's trailers. A hostile review grew a server past 5 GB from one
connection so: the bound was kept only between answers, and only for
heads still incomplete at the end of a read; trailers had none.
On the default server and on ``--trio``, through a real ``serve`` process."""

from __future__ import annotations

import http.server
import socket
import time
from pathlib import Path
from typing import Iterator

import attrs
import pytest
from processes import free_port
from served import LOOPS, Served, backend_at_mcp, read_answer, request, seed_access_token, serve

from mcp_oauth_proxy.serving import MAX_HEAD

# Far more than any server may hold of one request head.
FLOOD = 256 * 1024 * 1024
# What the server may grow by while refusing it: the head, a read or two, slack.
GROWTH = 64 * 1024 * 1024
# Connections one address may hold (small, so that a place kept for good shows),
# and the seconds an idle connection is kept (the floods here are cut long before).
CAP = 8
KEEP_ALIVE = 5
# Seconds the backend takes over a call that stands for a long tool call.
STALL = 30
HANDSHAKE = (b"upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             b"sec-websocket-version: 13\r\n\r\n")


class _Stalling(http.server.BaseHTTPRequestHandler):
    """A backend whose answer takes long: a long tool call."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/mcp/soon"):  # a call that ends in a second
            time.sleep(1)
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            return
        time.sleep(STALL)

    def log_message(self, *args: object) -> None:
        pass


@attrs.frozen
class Proxy:
    served: Served
    token: str


@pytest.fixture(scope="module", params=LOOPS)
def proxy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    yield from _proxy(request.param, tmp_path_factory)


@pytest.fixture(params=LOOPS)
def fresh_proxy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """A proxy of its own: no connection of another test holds a place."""
    yield from _proxy(request.param, tmp_path_factory)


def _proxy(loop: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp: Path = tmp_path_factory.mktemp(f"heads-{loop}")
    port = free_port()
    database = f"sqlite:///{tmp / 'proxy.db'}"
    token = seed_access_token(database, tmp / "keys", "acme", f"http://127.0.0.1:{port}/mcp")
    with backend_at_mcp(_Stalling) as backend, serve(
            tmp, loop, port=port, database=database,
            server=f"keep_alive_timeout = {KEEP_ALIVE}\nmax_connections_per_address = {CAP}",
            tenant=f'backend = "{backend}"') as served:
        yield Proxy(served, token)


def _rss(served: Served) -> int:
    for line in Path(f"/proc/{served.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _flood(sock: socket.socket, piece: bytes) -> int:
    """Send ``piece`` again and again until the server stops taking it; how much went."""
    sent = 0
    try:
        while sent < FLOOD:
            sock.sendall(piece)
            sent += len(piece)
    except OSError:  # reset, or a write after the server closed
        pass
    return sent


def _in_flight(proxy: Proxy, sock: socket.socket) -> None:
    """A request whose answer will take long, sent on ``sock``."""
    sock.sendall(request("GET", "/mcp", proxy.served.host, (("authorization", f"Bearer {proxy.token}"),
                                                            ("accept", "text/event-stream"))))
    time.sleep(0.5)  # forwarded: the backend holds it


PIECES = {
    "header_lines": b"x-a: " + b"a" * 8000 + b"\r\n",  # each a whole line: parsed and kept, one by one
    "one_endless_line": b"a" * 65536,  # never a whole line
}


@pytest.mark.parametrize("piece", PIECES)
def test_a_head_pipelined_behind_an_answer_under_way_is_held_to_the_bound(proxy: Proxy, piece: str) -> None:
    before = _rss(proxy.served)
    with proxy.served.connect(timeout=30) as sock:
        _in_flight(proxy, sock)
        sock.sendall(b"GET /mcp HTTP/1.1\r\nhost: " + proxy.served.host + b"\r\nx-endless: ")
        sent = _flood(sock, PIECES[piece])
        grown = _rss(proxy.served) - before
    assert sent < FLOOD, "the server took it all"
    assert grown < GROWTH, f"the server grew by {grown >> 20} MiB"
    alive = read_answer(_fresh(proxy), timeout=5)
    assert alive is not None and alive.status == 200


def _fresh(proxy: Proxy) -> socket.socket:
    sock = proxy.served.connect()
    sock.sendall(request("GET", "/.well-known/oauth-authorization-server", proxy.served.host))
    return sock


@pytest.mark.parametrize("size", [MAX_HEAD + 1024, 60_000, 4 * MAX_HEAD])
def test_a_head_past_the_bound_in_one_read_is_refused(proxy: Proxy, size: int) -> None:
    with proxy.served.connect() as sock:
        sock.sendall(request("GET", "/.well-known/oauth-authorization-server", proxy.served.host,
                             (("x-big", "a" * size),)))
        answer = read_answer(sock)
    assert answer is not None and answer.status in (400, 431), answer


def test_a_head_within_the_bound_is_served_however_it_comes(proxy: Proxy) -> None:
    head = request("GET", "/.well-known/oauth-authorization-server", proxy.served.host,
                   tuple((f"x-h{i}", "b" * 1000) for i in range(12)))
    assert len(head) < MAX_HEAD
    for pieces in ([head], [head[i:i + 700] for i in range(0, len(head), 700)]):
        with proxy.served.connect() as sock:
            for piece in pieces:
                sock.sendall(piece)
                time.sleep(0.01)
            answer = read_answer(sock)
        assert answer is not None and answer.status == 200, answer


@pytest.mark.parametrize("piece", PIECES)
def test_trailers_that_never_end_are_held_to_the_bound(proxy: Proxy, piece: str) -> None:
    before = _rss(proxy.served)
    with proxy.served.connect(timeout=30) as sock:
        sock.sendall(request("POST", "/oauth/token", proxy.served.host,
                             (("transfer-encoding", "chunked"),
                              ("content-type", "application/x-www-form-urlencoded"))) + b"1\r\na\r\n0\r\n")
        sent = _flood(sock, PIECES[piece])
        grown = _rss(proxy.served) - before
    assert sent < FLOOD, "the server took it all"
    assert grown < GROWTH, f"the server grew by {grown >> 20} MiB"


def test_a_chunked_body_with_trailers_within_the_bound_is_served(proxy: Proxy) -> None:
    with proxy.served.connect() as sock:
        sock.sendall(request("POST", "/oauth/token", proxy.served.host,
                             (("transfer-encoding", "chunked"),
                              ("content-type", "application/x-www-form-urlencoded")))
                     + b"13\r\ngrant_type=password\r\n0\r\nx-trailer: " + b"t" * 4000 + b"\r\n\r\n")
        answer = read_answer(sock)
    # Read whole and answered by the token endpoint (an OAuth error: no such grant), not cut or refused.
    assert answer is not None and answer.status in (400, 401), answer
    assert answer.headers.get("content-type") == "application/json", answer


def test_a_head_just_within_the_bound_written_tightly_is_served(proxy: Proxy) -> None:
    # No space after the colons (RFC 9110 §5.6.3: optional): each line as short as a line can be.
    lines = b"".join(b"x%d:v\r\n" % i for i in range(2200))
    head = b"GET /.well-known/oauth-authorization-server HTTP/1.1\r\nhost: " + proxy.served.host + b"\r\n" + lines
    head = head[:MAX_HEAD - 200].rpartition(b"\r\n")[0] + b"\r\n\r\n"
    assert MAX_HEAD - 300 < len(head) <= MAX_HEAD
    with proxy.served.connect() as sock:
        sock.sendall(head)
        answer = read_answer(sock)
    assert answer is not None and answer.status == 200, answer


def test_a_head_and_trailers_each_within_the_bound_are_served(proxy: Proxy) -> None:
    near = MAX_HEAD * 5 // 8  # together past the bound, each within it
    with proxy.served.connect() as sock:
        sock.sendall(request("POST", "/oauth/token", proxy.served.host,
                             (("transfer-encoding", "chunked"), ("x-big", "h" * near),
                              ("content-type", "application/x-www-form-urlencoded")))
                     + b"13\r\ngrant_type=password\r\n0\r\nx-trailer: " + b"t" * near + b"\r\n\r\n")
        answer = read_answer(sock)
    assert answer is not None and answer.status in (400, 401), answer
    assert answer.headers.get("content-type") == "application/json", answer  # the token endpoint's


def test_trailers_never_join_the_head_the_guard_read(proxy: Proxy) -> None:
    """A trailer is dropped (RFC 9110 §6.5.1): one naming Authorization (or
    Host) cannot change what the guard, or the Host check, decided on."""
    with proxy.served.connect() as sock:
        sock.sendall(request("POST", "/mcp", proxy.served.host,
                             (("authorization", f"Bearer {proxy.token}"), ("transfer-encoding", "chunked"),
                              ("content-type", "application/json")))
                     + b"2\r\n{}\r\n0\r\nauthorization: Bearer mcp_at_forged\r\nhost: elsewhere.test\r\n\r\n")
        answer = read_answer(sock)
    # Forwarded, the token in the head good: the backend's own answer (it takes no POST: 501).
    assert answer is not None and answer.status == 501, answer


def test_a_malformed_request_behind_an_answer_under_way_ends_the_connection_without_a_word(proxy: Proxy) -> None:
    """A 400 written then would sit among the first answer's bytes (or pass
    for that answer, which has not begun): the connection is cut instead."""
    with proxy.served.connect(timeout=10) as sock:
        _in_flight(proxy, sock)
        sock.sendall(b"GET /mcp HTTP/1.1\r\nhost: " + proxy.served.host + b"\r\nbad header\r\n\r\n")
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    assert not received.startswith(b"HTTP/1.1 400"), received[:200]


def _all_places_free(proxy: Proxy) -> bool:
    """Whether this address can hold CAP connections at once, each answered."""
    held: list[socket.socket] = []
    try:
        for _ in range(CAP):
            held.append(proxy.served.connect())
        for sock in held:
            sock.sendall(request("GET", "/.well-known/oauth-authorization-server", proxy.served.host))
        answers = [read_answer(sock) for sock in held]
    except OSError:  # one past the cap, closed as it was accepted
        return False
    finally:
        for sock in held:
            sock.close()
    return all(a is not None and a.status == 200 for a in answers)


def test_a_websocket_handshake_behind_an_answer_under_way_keeps_nothing(fresh_proxy: Proxy) -> None:
    """A third review: on trio the handshake left its connection's task, and
    its place under the cap, for good; on uvicorn the request ahead of it
    got the handshake's 403 for its answer. No WebSocket is spoken now: the
    request ahead gets its own answer, the handshake a 403 from the server,
    and every place comes free once its socket closes (on trio a task may
    outlive its socket: the place is the socket's)."""
    for _ in range(CAP + 2):
        with fresh_proxy.served.connect() as sock:
            sock.sendall(request("GET", "/mcp/soon", fresh_proxy.served.host, (("authorization", f"Bearer {fresh_proxy.token}"),))
                         + b"GET /mcp HTTP/1.1\r\nhost: " + fresh_proxy.served.host + b"\r\n" + HANDSHAKE)
            first = read_answer(sock)
            assert first is not None and first.status == 200 and first.body == b"{}", first
    deadline = time.monotonic() + KEEP_ALIVE + 25  # a loaded machine lets them go late, but not never
    while not _all_places_free(fresh_proxy):
        assert time.monotonic() < deadline, "places kept after their connections ended"
        time.sleep(1.0)
    answer = None
    while answer is None:  # a handshake alone: refused by the server itself (once the probes' places are back)
        assert time.monotonic() < deadline, "no answer to a handshake"
        try:
            with fresh_proxy.served.connect() as alone:
                alone.sendall(b"GET /mcp HTTP/1.1\r\nhost: " + fresh_proxy.served.host + b"\r\n" + HANDSHAKE)
                answer = read_answer(alone)
        except OSError:
            time.sleep(0.5)
    assert answer.status == 403, answer
