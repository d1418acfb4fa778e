"""Clients that hold a connection by never finishing: a request body that
never ends (a byte now and then), a request head that never ends, a
connection that never sends anything. Each is closed within its timeout
(``body_timeout``, ``keep_alive_timeout``, configured short here); a
request head that grows as fast as the server reads it is cut off long
before the timeout. On the default server and on ``--trio``, through a
real ``serve`` process."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from processes import stop_process
from served import LOOPS, Served, closed_within, read_answer, request, serve

TIMEOUT = 1.0
MARGIN = 2.0
# Many times what a server may hold of an unfinished request head (h11: 16 KiB).
ENDLESS_HEAD = 64 * 1024 * 1024


@pytest.fixture(scope="module", params=LOOPS)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp: Path = tmp_path_factory.mktemp(f"slow-{request.param}")
    with serve(tmp, request.param, server=f"body_timeout = {TIMEOUT}\nkeep_alive_timeout = {TIMEOUT}") as running:
        yield running


def trickle_until_closed(sock: socket.socket, drip: bytes, seconds: float) -> tuple[float | None, bytes]:
    """Send ``drip`` every 0.2 s (so no single read ever waits long) until the
    server closes the connection: how long that took (None: still open after
    ``seconds``), and what the server sent meanwhile."""
    start = time.monotonic()
    received = b""
    while time.monotonic() - start < seconds:
        try:
            sock.sendall(drip)
            sock.settimeout(0.2)
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:  # reset, or a write after the server closed
            return time.monotonic() - start, received
        if not data:
            return time.monotonic() - start, received
        received += data
    return None, received


def test_a_request_body_that_never_ends_is_cut_off(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(request("POST", "/oauth/token", served.host, (("content-length", "100000"),
                                                                   ("content-type", "application/json"))))
        took, received = trickle_until_closed(sock, b"x", TIMEOUT + MARGIN)
    assert took is not None, "still open"
    assert received.startswith(b"HTTP/1.1 408 "), received


def test_a_request_head_that_never_ends_is_cut_off(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(b"GET /.well-known/oauth-authorization-server HTTP/1.1\r\nhost: " + served.host + b"\r\n")
        took, _ = trickle_until_closed(sock, b"x-slow: 1\r\n", TIMEOUT + MARGIN)
    assert took is not None, "still open"


def test_an_idle_connection_is_closed(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(request("GET", "/.well-known/oauth-authorization-server", served.host))
        answer = read_answer(sock)
        assert answer is not None and answer.status == 200
        sock.settimeout(TIMEOUT + MARGIN)
        assert sock.recv(1) == b""  # closed by the server, not timed out here


def test_a_connection_that_never_sends_anything_is_closed(served: Served) -> None:
    with served.connect() as sock:
        assert closed_within(sock, TIMEOUT + MARGIN) is not None, "still open"


@pytest.fixture(scope="module", params=LOOPS)
def patient(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server whose keep-alive timeout is far longer than sending ENDLESS_HEAD takes."""
    tmp: Path = tmp_path_factory.mktemp(f"patient-{request.param}")
    with serve(tmp, request.param, server="keep_alive_timeout = 60") as running:
        yield running


def test_a_request_head_that_grows_without_end_is_cut_off(patient: Served) -> None:
    """Sent as fast as the server reads it: the server holds only so much of
    it, then closes the connection (the client's writes fail)."""
    sent = 0
    with patient.connect(timeout=30) as sock:
        sock.sendall(b"GET /.well-known/oauth-authorization-server HTTP/1.1\r\nhost: " + patient.host
                     + b"\r\nx-endless: ")
        try:
            while sent < ENDLESS_HEAD:
                sock.sendall(b"a" * 65536)
                sent += 65536
        except OSError:  # reset, or a write after the server closed
            pass
    assert sent < ENDLESS_HEAD
    alive = httpx.get(f"{patient.base}/.well-known/oauth-authorization-server", timeout=5, trust_env=False)
    assert alive.status_code == 200


def _send_queue(server_port: int, client_port: int) -> int:
    """Bytes the kernel holds unsent on the server's side of a connection (/proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1].split(":"), fields[2].split(":")
        if int(local[1], 16) == server_port and int(remote[1], 16) == client_port:
            return int(fields[4].split(":")[0], 16)
    return -1


def test_a_client_that_never_reads_its_answers_is_let_go(served: Served) -> None:
    """A third review: answers a client never reads, too few to pause the
    server's writing (so no send_timeout), left uvicorn's close() waiting
    for a flush that never came: the connection, its descriptor and its
    place under the caps were held for good. Its idle timer now aborts it."""
    before = served.fds()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        sock.connect(("127.0.0.1", served.port))
        mine, last, sent = sock.getsockname()[1], -2, 0
        while sent < 20000:  # one at a time, never read, until the server's kernel takes no more
            sock.sendall(request("GET", "/.well-known/oauth-authorization-server", served.host))
            sent += 1
            time.sleep(0.004)
            if sent % 5 == 0:
                time.sleep(0.02)
                queued = _send_queue(served.port, mine)
                if queued == last:
                    break
                last = queued
        # On uvicorn within the idle timeout; on trio its send waits out send_timeout (30 s here).
        deadline = time.monotonic() + 30 + 15
        while served.fds() > before:
            assert time.monotonic() < deadline, "the connection is still held"
            time.sleep(0.2)


SEND_TIMEOUT = 2.0


@pytest.fixture(scope="module", params=LOOPS)
def impatient(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server that gives a client SEND_TIMEOUT seconds to read what it asked for."""
    tmp: Path = tmp_path_factory.mktemp(f"impatient-{request.param}")
    with serve(tmp, request.param, server=f"send_timeout = {SEND_TIMEOUT}\nkeep_alive_timeout = 10") as running:
        yield running


def test_a_client_that_asks_on_and_never_reads_is_let_go(impatient: Served) -> None:
    """A eighth review: a client that sends a request every few moments
    (so its connection is never idle) and never reads the answers had them
    pile up in the server's kernel send buffer, megabytes of it, before
    writing ever blocked and send_timeout could start. The server's kernel
    now holds little unsent (TCP_NOTSENT_LOWAT): writing blocks, and the
    connection is let go send_timeout later."""
    took, most = _ask_until_let_go(impatient, every=0.01)
    assert took is not None, f"still open after 40 s; the server's kernel held {most} bytes unsent"
    assert most <= 256 * 1024, most


def _ask_until_let_go(served: Served, every: float) -> tuple[float | None, int]:
    """Asks for a small answer ``every`` seconds, never reading, until the
    server lets the connection go: how long that took (None: not within 40
    s), and the most its kernel held unsent meanwhile."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        sock.connect(("127.0.0.1", served.port))
        mine, most, start = sock.getsockname()[1], 0, time.monotonic()
        while time.monotonic() - start < 40:
            try:
                sock.sendall(request("GET", "/.well-known/oauth-authorization-server", served.host))
            except OSError:  # reset: the server let it go
                return time.monotonic() - start, most
            most = max(most, _send_queue(served.port, mine))
            time.sleep(every)
    return None, most


def _server_side_state(server_port: int, client_port: int) -> str | None:
    """The TCP state of the server's side of a connection (/proc/net/tcp:
    01 established, 04 FIN_WAIT1, ...), None once the kernel holds none."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1].split(":"), fields[2].split(":")
        if int(local[1], 16) == server_port and int(remote[1], 16) == client_port:
            return fields[3]
    return None


def test_a_client_let_go_leaves_nothing_behind(impatient: Served) -> None:
    """A second review of remembered verdicts: a client that asks for a
    few dozen answers and then neither reads nor sends (its window shut)
    is let go, but the server's kernel went on holding its side,
    FIN_WAIT1 behind the unsent answers, for minutes, outside every cap.
    Letting go resets the connection: nothing is left."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        sock.connect(("127.0.0.1", impatient.port))
        mine, last = sock.getsockname()[1], -1
        while True:  # one at a time, each read by the server, until its kernel takes no more answers
            for _ in range(4):
                sock.sendall(request("GET", "/.well-known/oauth-authorization-server", impatient.host))
                time.sleep(0.01)
            time.sleep(0.05)
            queued = _send_queue(impatient.port, mine)
            if queued == last:
                break
            last = queued
        deadline = time.monotonic() + 15  # send_timeout, or (uvicorn) the idle timer's abort
        while _server_side_state(impatient.port, mine) == "01":
            assert time.monotonic() < deadline, "the server still holds the connection open"
            time.sleep(0.1)
        time.sleep(0.5)
        assert _server_side_state(impatient.port, mine) is None


def test_a_client_that_asks_slowly_and_never_reads_is_let_go_soon(impatient: Served) -> None:
    """The same review: on uvicorn writing paused only once 64 KiB of
    answers waited in the process, after the kernel's share, so a client
    asking for a small answer every few seconds, never reading, held its
    connection for minutes before send_timeout even began. Writing now
    pauses as soon as the kernel takes no more."""
    took, _ = _ask_until_let_go(impatient, every=0.4)
    assert took is not None, "still open after 40 s"
    assert took < 12, took  # 20.4 s on uvicorn before; about 6.4 s on both now


def test_a_closed_connection_its_client_never_reads_is_not_left_behind(impatient: Served) -> None:
    """The same review, again: an answer that ends its connection
    (``Connection: close``), or the idle timer's close, while the client
    never reads: closed the usual way, the server's kernel kept the
    connection, FIN_WAIT1 behind the unsent answer, for some five minutes,
    outside every cap (no token needed, on either server). The kernel now
    gives up on a peer whose window stays shut for send_timeout."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sock.connect(("127.0.0.1", impatient.port))
        mine = sock.getsockname()[1]
        ask = request("GET", "/.well-known/oauth-authorization-server", impatient.host)
        # Answers the server's kernel takes whole (below UNSENT_LOWAT): writing never pauses.
        sock.sendall(ask * 6 + request("GET", "/.well-known/oauth-authorization-server", impatient.host,
                                        (("connection", "close"),)))
        deadline = time.monotonic() + SEND_TIMEOUT + 15
        while _server_side_state(impatient.port, mine) is not None:
            assert time.monotonic() < deadline, (f"the server's side is still held: state "
                                                 f"{_server_side_state(impatient.port, mine)}")
            time.sleep(0.2)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_request_sent_while_an_idle_connection_closes_is_not_served(loop: str, tmp_path: Path) -> None:
    """A fourth review: while the idle close of a connection waited for its
    client to take the last answers (trio), the server read on and ran
    what came meanwhile (a forwarded POST reached its backend), then cut
    its answer off. A closing connection serves nothing more; what its
    client sends is read and dropped, so the close is no reset either."""
    with serve(tmp_path, loop, server="send_timeout = 5\nkeep_alive_timeout = 2") as served:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.connect(("127.0.0.1", served.port))
            ask = request("GET", "/.well-known/oauth-authorization-server", served.host)
            sock.sendall(ask * 6)  # answers the kernel takes whole, left unread
            time.sleep(2.7)  # past the idle timeout: the connection is closing, its answers not yet taken
            sock.sendall(ask)
            received = b""
            sock.settimeout(10)
            while data := sock.recv(65536):
                received += data
    assert received.count(b"HTTP/1.1 200 ") == 6, received.count(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("loop", LOOPS)
def test_a_server_told_to_stop_does_not_wait_on_a_lingering_close(loop: str, tmp_path: Path) -> None:
    """A fifth review: on trio, a client taking the rest of its answers a
    little at a time kept the idle close lingering, and the server, told to
    stop, waited on it (Hypercorn shields that wait from its own deadline)
    for as long as the client went on. It now gives up the connection."""
    with serve(tmp_path, loop, server="send_timeout = 5\nkeep_alive_timeout = 2") as served:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sock.connect(("127.0.0.1", served.port))
        sock.sendall(request("GET", "/.well-known/oauth-authorization-server", served.host) * 6)
        time.sleep(2.7)  # the idle close lingers: its answers are not all taken

        def trickle() -> None:  # takes a little now and then, so the linger goes on
            with contextlib.suppress(OSError):
                while sock.recv(512):
                    time.sleep(1)

        reader = threading.Thread(target=trickle, daemon=True)
        reader.start()
        started = time.monotonic()
        stop_process(served.proc, grace=15)
        took = time.monotonic() - started
        sock.close()
    assert took < 8, f"the server took {took:.1f} s to stop"
