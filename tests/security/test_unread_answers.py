"""Clients that send and never read: requests pipelined far ahead of their
answers (uvicorn queued every one: a connection took gigabytes), and a
stream of answers left unread (the server waited for ever, holding the
connection). A real ``serve`` on each loop, with ``send_timeout`` short."""

from __future__ import annotations

import contextlib
import http.server
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest
from processes import free_port
from served import LOOPS, backend_at_mcp, seed_access_token, serve

SEND_TIMEOUT = 2


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _not_reading(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # answers back up at once
    sock.connect(("127.0.0.1", port))
    return sock


def _ended_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server ends the connection: what it had sent is read
    (it is finite once the server has given up on the connection) and then
    the end comes, within ``seconds``."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return False


@pytest.mark.parametrize("loop", LOOPS)
def test_requests_pipelined_far_ahead_of_their_answers_end_the_connection(loop: str, tmp_path: Path) -> None:
    with serve(tmp_path, loop, server=f"send_timeout = {SEND_TIMEOUT}") as served:
        before = _rss_mb(served.proc.pid)
        request = b"GET /.well-known/oauth-authorization-server HTTP/1.1\r\nhost: " + served.host + b"\r\n\r\n"
        sock = _not_reading(served.port)
        sent, cut_off = 0, False
        deadline = time.monotonic() + 15
        sock.settimeout(1)
        try:
            while time.monotonic() < deadline and sent < 200_000:
                sock.sendall(request * 100)
                sent += 100
        except (ConnectionResetError, BrokenPipeError):
            cut_off = True
        except socket.timeout:  # the server stopped reading: it must end the connection soon
            cut_off = _ended_within(sock, SEND_TIMEOUT + 5)
        grown = _rss_mb(served.proc.pid) - before
        sock.close()
        assert cut_off, f"{sent} requests sent, the connection still open"
        assert grown < 100, f"the server grew by {grown:.0f} MB"
        # Everyone else is still served.
        assert httpx.get(f"{served.base}/.well-known/oauth-authorization-server", trust_env=False,
                         timeout=10).status_code == 200


class _Endless(http.server.BaseHTTPRequestHandler):
    """A backend answering an event stream that never ends."""

    protocol_version = "HTTP/1.1"
    ended: list[float] = []

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        event = b"data: " + b"x" * 8000 + b"\n\n"
        chunk = b"%x\r\n%s\r\n" % (len(event), event)
        try:
            while True:
                self.wfile.write(chunk)
                self.wfile.flush()
        except OSError:
            _Endless.ended.append(time.monotonic())  # the proxy gave up on this stream

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endless() -> Iterator[str]:
    with backend_at_mcp(_Endless) as url:
        yield url


@pytest.mark.parametrize("loop", LOOPS)
def test_a_client_that_stops_reading_a_stream_is_cut_off(loop: str, tmp_path: Path, endless: str) -> None:
    port = free_port()
    database = f"sqlite:///{tmp_path / 'proxy.db'}"
    token = seed_access_token(database, tmp_path / "keys", "acme", f"http://127.0.0.1:{port}/mcp")
    with serve(tmp_path, loop, port=port, database=database, server=f"send_timeout = {SEND_TIMEOUT}",
               tenant=f'backend = "{endless}"') as served:
        sock = _not_reading(served.port)
        sock.sendall(b"GET /mcp HTTP/1.1\r\nhost: " + served.host + b"\r\nauthorization: Bearer "
                     + token.encode() + b"\r\naccept: text/event-stream\r\n\r\n")
        started = time.monotonic()
        time.sleep(SEND_TIMEOUT + 2)  # not reading
        assert _ended_within(sock, 10), "the server still sends the stream"
        sock.close()
        # The backend's stream was cancelled too, when the client was cut off.
        wait = time.monotonic() + 5
        while not _Endless.ended and time.monotonic() < wait:
            time.sleep(0.1)
        assert _Endless.ended and _Endless.ended[-1] - started < SEND_TIMEOUT + 12
        assert "left its answers unread" in served.log_text()


BIG = 600 * 1024


class _Big(http.server.BaseHTTPRequestHandler):
    """A backend answering one large body, written in one piece."""

    protocol_version = "HTTP/1.1"
    size = BIG

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("content-length", str(self.size))
        self.end_headers()
        self.wfile.write(b"x" * self.size)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _asked(loop: str, tmp_path: Path, handler: type[_Big], rcvbuf: int, headers: bytes = b"") -> Iterator[socket.socket]:
    """A client's connection to serve (send_timeout short), its receive
    buffer ``rcvbuf``, that has asked POST /mcp of a backend answering with
    ``handler`` (``headers`` added to the request)."""
    with backend_at_mcp(handler) as url:
        port = free_port()
        database = f"sqlite:///{tmp_path / 'proxy.db'}"
        token = seed_access_token(database, tmp_path / "keys", "acme", f"http://127.0.0.1:{port}/mcp")
        with serve(tmp_path, loop, port=port, database=database, server=f"send_timeout = {SEND_TIMEOUT}",
                   tenant=f'backend = "{url}"') as served:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.connect(("127.0.0.1", served.port))
            sock.sendall(b"POST /mcp HTTP/1.1\r\nhost: " + served.host + b"\r\nauthorization: Bearer "
                         + token.encode() + b"\r\n" + headers + b"content-type: application/json"
                         b"\r\ncontent-length: 2\r\n\r\n{}")
            sock.settimeout(SEND_TIMEOUT + 5)
            try:
                yield sock
            finally:
                sock.close()


def _read(sock: socket.socket, per_second: int, until: Callable[[bytes, float], bool]) -> bytes:
    """What the server sends, read 1 KiB at a time, ``per_second`` of them a
    second, until ``until(what came, seconds)`` or the end of the connection;
    an error if the server cuts the connection off."""
    received, start = b"", time.monotonic()
    try:
        while not until(received, time.monotonic() - start):
            data = sock.recv(1024)
            if not data:
                break
            received += data
            time.sleep(1 / per_second)
    except OSError as error:
        raise AssertionError(f"cut off after {len(received)} bytes, "
                             f"{time.monotonic() - start:.1f} s: {error!r}") from None
    return received


def _whole(size: int) -> Callable[[bytes, float], bool]:
    return lambda received, _: len(received.partition(b"\r\n\r\n")[2]) >= size


@pytest.mark.parametrize("loop", LOOPS)
def test_a_client_reading_slowly_but_steadily_gets_the_whole_answer(loop: str, tmp_path: Path) -> None:
    """A review: a client reading a large forwarded answer at a steady
    16-24 KiB/s was cut off (uvicorn): send_timeout ran from the moment
    writing paused until every byte held for the client had gone, however
    steadily it went. The clock measures a client that reads nothing."""
    with _asked(loop, tmp_path, _Big, 8192) as sock:
        received = _read(sock, 64, _whole(BIG))  # 64 KiB/s: the whole takes several send_timeouts
    assert received.startswith(b"HTTP/1.1 200 ")
    assert received.partition(b"\r\n\r\n")[2] == b"x" * BIG


@pytest.mark.parametrize("loop", LOOPS)
def test_a_client_with_a_small_window_reading_steadily_is_not_cut_off(loop: str, tmp_path: Path) -> None:
    """A second review: with TCP_USER_TIMEOUT set on every connection, a
    client reading a steady 8-16 KB/s through a window smaller than the
    segment waiting for it was reset by the kernel send_timeout after its
    first window probe (the probe's clock restarts only when the whole
    segment fits), however much it read meanwhile."""
    with _asked(loop, tmp_path, _Big, 4096) as sock:
        received = _read(sock, 16, lambda _, seconds: seconds >= 4 * SEND_TIMEOUT)
    assert len(received) > 4 * SEND_TIMEOUT * 12 * 1024


class _Smaller(_Big):
    size = 100_000


@pytest.mark.parametrize("loop", LOOPS)
def test_a_slow_reader_of_an_answer_that_ends_its_connection_gets_all_of_it(loop: str, tmp_path: Path) -> None:
    """A third review: with TCP_USER_TIMEOUT set as a connection closed (to
    free it from the kernel soon), a client reading 16 KB/s through a small
    window an answer it had asked to end the connection with
    (``Connection: close``, or HTTP/1.0) was reset before its end. The close
    now waits, judged by the same clock as any answer: a client that takes
    nothing for send_timeout is reset, one that reads gets all of it."""
    with _asked(loop, tmp_path, _Smaller, 4096, b"connection: close\r\n") as sock:
        received = _read(sock, 16, lambda _, __: False)  # to the end of the connection
    assert received.startswith(b"HTTP/1.1 200 ")
    assert received.partition(b"\r\n\r\n")[2] == b"x" * _Smaller.size
