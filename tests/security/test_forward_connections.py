"""Connections that carried a forwarded answer end as any other: at once
when the client said ``Connection: close``, after ``keep_alive_timeout``
when idle. On Hypercorn (``--trio``) neither happened: the forwarder,
seeing Hypercorn's "disconnect" that follows every answer, cancelled its
own sending of the answer's end, and the connection (a descriptor) was
held for ever by anyone with a token. A real ``serve`` on each loop."""

from __future__ import annotations

import http.server
import time
from pathlib import Path
from typing import Iterator

import pytest
from processes import free_port
from served import LOOPS, backend_at_mcp, closed_within, read_answer, seed_access_token, serve

KEEP_ALIVE = 2


class _Json(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path.endswith("/slow"):
            time.sleep(1)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[str]:
    with backend_at_mcp(_Json) as url:
        yield url


@pytest.mark.parametrize("loop", LOOPS)
def test_a_connection_that_carried_a_forwarded_answer_ends_like_any_other(loop: str, tmp_path: Path,
                                                                         backend: str) -> None:
    port = free_port()
    database = f"sqlite:///{tmp_path / 'proxy.db'}"
    token = seed_access_token(database, tmp_path / "keys", "acme", f"http://127.0.0.1:{port}/mcp")
    with serve(tmp_path, loop, port=port, database=database, tenant=f'backend = "{backend}"',
               server=f"keep_alive_timeout = {KEEP_ALIVE}") as served:
        def post(connection: bytes = b"") -> bytes:
            return (b"POST /mcp HTTP/1.1\r\nhost: " + served.host + b"\r\nauthorization: Bearer " + token.encode()
                    + b"\r\ncontent-type: application/json\r\ncontent-length: 2\r\n" + connection + b"\r\n{}")

        with served.connect() as sock:
            sock.sendall(post(b"connection: close\r\n"))
            answer = read_answer(sock)
            assert answer is not None and answer.status == 200 and answer.body == b"{}"
            assert closed_within(sock, 2) is not None, "Connection: close, and the connection stayed open"
        with served.connect() as sock:
            for _ in range(2):  # kept alive between answers
                sock.sendall(post())
                answer = read_answer(sock)
                assert answer is not None and answer.status == 200
            started = time.monotonic()
            assert closed_within(sock, KEEP_ALIVE + 3) is not None, "an idle connection outlived keep_alive_timeout"
            assert time.monotonic() - started >= KEEP_ALIVE - 0.5
        sockets = [served.connect() for _ in range(50)]
        for sock in sockets:
            sock.sendall(post(b"connection: close\r\n"))
        for sock in sockets:  # every one closed by the server, none held
            assert read_answer(sock) is not None and closed_within(sock, 5) is not None
            sock.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_a_client_leaving_with_requests_pipelined_behind_a_slow_answer_logs_nothing(
        loop: str, tmp_path: Path, backend: str) -> None:
    """uvicorn told only the request parsed last that its client had gone: the
    one being answered wrote to the closed connection, a traceback each."""
    port = free_port()
    database = f"sqlite:///{tmp_path / 'proxy.db'}"
    token = seed_access_token(database, tmp_path / "keys", "acme", f"http://127.0.0.1:{port}/mcp")
    with serve(tmp_path, loop, port=port, database=database, tenant=f'backend = "{backend}"') as served:
        request = (b"POST /mcp/slow HTTP/1.1\r\nhost: " + served.host + b"\r\nauthorization: Bearer "
                   + token.encode() + b"\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
        for _ in range(5):
            with served.connect() as sock:
                sock.sendall(request * 3)
                time.sleep(0.3)
        time.sleep(2)  # the slow answers are in by now
        text = served.log_text()
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text[-3000:]
