"""Input meant to fill the disk through the log: malformed protocol input (a
garbage h2c upgrade, a TLS ClientHello on the plain port, random bytes, an
HTTP/2 preface followed by garbage, an HTTP/2 body that goes on after its
early answer) is at most a short line now and then, never a traceback, and
never stops the server; and no request URL reaches the log (there is no
access log), not even the forwarded backend URL the HTTP client would log."""

from __future__ import annotations

import http.server
import random
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Iterator

import h2.config
import h2.connection
import httpx
import pytest
from processes import free_port
from served import LOOPS, backend_at_mcp, seed_access_token, serve

SECRET = "s3cr3t-query-value"
# How often each garbage input is sent; the log may grow by a line or two in all.
REPEAT = 5
MAX_NEW_LINES = 2


def client_hello() -> bytes:
    """The first bytes a TLS client sends."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="acme.test")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def h2_body_after_answer(host: str) -> bytes:
    """HTTP/2 with prior knowledge: a POST to the guarded resource, no token,
    its body in many frames that keep coming after the 401."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":path", f"/mcp?q={SECRET}"), (":scheme", "http"),
                          (":authority", host)])
    for _ in range(12):
        conn.send_data(1, b"x" * 100)
    conn.end_stream(1)
    return conn.data_to_send()


def garbage(host: str) -> dict[str, bytes]:
    noise = random.Random(7)
    return {
        "h2c_upgrade_with_garbage_settings": (
            f"GET /oauth/authorize?state={SECRET} HTTP/1.1\r\nHost: {host}\r\n"
            "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: !!not*base64!!\r\n\r\n"
        ).encode(),
        "tls_client_hello": client_hello(),
        "random_bytes": noise.randbytes(700),
        "h2_preface_then_garbage": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + noise.randbytes(300),
        "h2_body_after_early_answer": h2_body_after_answer(host),
        # Hypercorn logged a traceback per connection for these two.
        "bytes_after_a_refused_websocket_handshake": (
            f"GET /mcp HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nX"
        ).encode(),
    }


def close_after_first_answer(port: int, host: str) -> None:
    """Ask for ``100 Continue``, and leave once it comes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"POST /mcp HTTP/1.1\r\nHost: {host}\r\nExpect: 100-continue\r\n"
                     "Content-Length: 100\r\n\r\n".encode())
        sock.recv(4096)


def send_and_drain(port: int, data: bytes) -> None:
    """Send ``data``, then read whatever comes until the server closes or a second passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        sock.settimeout(1.0)
        try:
            while sock.recv(65536):
                pass
        except (socket.timeout, ConnectionResetError):
            pass


@pytest.mark.parametrize("loop", LOOPS)
def test_malformed_protocol_input_never_logs_a_traceback_or_stops_the_server(loop: str, tmp_path: Path) -> None:
    with serve(tmp_path, loop) as served:
        started = served.log_text().count("\n")
        for name, data in garbage(served.host.decode()).items():
            for _ in range(REPEAT):
                send_and_drain(served.port, data)
            alive = httpx.get(f"{served.base}/.well-known/oauth-authorization-server", timeout=5, trust_env=False)
            assert alive.status_code == 200, name
        for _ in range(REPEAT):
            close_after_first_answer(served.port, served.host.decode())
        time.sleep(0.5)  # what the server logs of the last ones is written by now
        text = served.log_text()
    assert "Traceback" not in text, text[-3000:]
    assert SECRET not in text
    assert text.count("\n") - started <= MAX_NEW_LINES + 1, text  # + the line saying the server stops


class _Backend(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[str]:
    with backend_at_mcp(_Backend) as url:
        yield url


@pytest.mark.parametrize("loop", LOOPS)
def test_forwarded_request_urls_never_reach_the_log(loop: str, tmp_path: Path, backend: str) -> None:
    port = free_port()
    database = f"sqlite:///{tmp_path / 'proxy.db'}"
    token = seed_access_token(database, tmp_path / "keys", "acme", f"http://127.0.0.1:{port}/mcp")
    with serve(tmp_path, loop, port=port, database=database, tenant=f'backend = "{backend}"') as served:
        got = httpx.get(f"{served.base}/mcp/sub?session={SECRET}", headers={"authorization": f"Bearer {token}"},
                        timeout=10, trust_env=False)
        assert got.status_code == 200 and got.text == "ok"
        time.sleep(0.2)  # a log line of the request, if any, is written by now
        text = served.log_text()
    assert SECRET not in text, text
    assert "/mcp/sub" not in text, text


@pytest.mark.parametrize("loop", LOOPS)
def test_a_backend_that_is_down_is_one_line_not_one_per_request(loop: str, tmp_path: Path) -> None:
    port = free_port()
    database = f"sqlite:///{tmp_path / 'proxy.db'}"
    token = seed_access_token(database, tmp_path / "keys", "acme", f"http://127.0.0.1:{port}/mcp")
    down = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
    with serve(tmp_path, loop, port=port, database=database, tenant=f'backend = "{down}"') as served, \
            httpx.Client(timeout=10, trust_env=False) as http:
        for _ in range(30):
            assert http.get(f"{served.base}/mcp", headers={"authorization": f"Bearer {token}"}).status_code == 502
        time.sleep(0.2)
        text = served.log_text()
    assert text.count("the backend failed before answering") == 1, text


@pytest.mark.parametrize("loop", LOOPS)
def test_running_out_of_descriptors_is_one_short_line_not_a_traceback_per_accept(loop: str, tmp_path: Path) -> None:
    with serve(tmp_path, loop, server="keep_alive_timeout = 30") as served:
        subprocess.run(["prlimit", f"--pid={served.proc.pid}", "--nofile=48:48"], check=True)
        started = served.log_text().count("\n")
        crowd = []
        for _ in range(80):  # idle connections, more than the descriptors left
            try:
                crowd.append(socket.create_connection(("127.0.0.1", served.port), timeout=2))
            except OSError:
                break
        time.sleep(2)  # the loop retries its accept() ten times a second meanwhile
        for sock in crowd:
            sock.close()
        alive = httpx.get(f"{served.base}/.well-known/oauth-authorization-server", timeout=10, trust_env=False)
        assert alive.status_code == 200
        text = served.log_text()
    assert "Traceback" not in text, text[-3000:]
    assert text.count("\n") - started <= MAX_NEW_LINES + 1, text[-3000:]
