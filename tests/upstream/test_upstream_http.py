"""The Fetch carriers against a real server on loopback: answers come back
as they are (redirects not followed), every failure is a FetchFailed with
a fixed message, on sync, asyncio and trio."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from mcp_oauth_proxy.core.errors import FetchFailed
from mcp_oauth_proxy.core.http import HttpRequest
from mcp_oauth_proxy.upstream.http import AsyncFetcher, SyncFetcher

MESSAGE = "the identity provider could not be reached"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.do_POST()

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/slow":
            time.sleep(1.0)
        if self.path == "/redirect":
            return self._send(302, b"", [("location", "/ok")])
        if self.path == "/big":
            return self._send(200, b"x" * 5000)
        if self.path.startswith("/trickle-head"):
            return self._trickle_head()
        if self.path.startswith("/trickle"):
            return self._trickle()
        if self.path.startswith("/held"):
            HELD.wait(10)
            return self._send(200, b"held")
        echo = f"{self.command} {self.headers.get('accept')} {body.decode()}".encode()
        self._send(200, echo, [("x-conn", str(id(self.connection)))])

    def _trickle_head(self) -> None:
        # The status line and headers a byte every 0.1 s: no answer has begun.
        try:
            for byte in b"HTTP/1.1 200 OK\r\nx-slow: " + b"y" * 600:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    def _trickle(self) -> None:
        # A head, then a byte every 0.1 s for ever: no read ever waits long.
        try:
            self.send_response(200)
            self.send_header("content-length", "100000")
            self.end_headers()
            for _ in range(600):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
        try:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up (timeout test)


HELD = threading.Event()  # /held answers once it is set


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> HttpRequest:
    return HttpRequest("GET", url, (("accept", "application/json"),))


def failures(base: str) -> list[HttpRequest]:
    return [
        get(f"http://127.0.0.1:{closed_port()}/ok"),  # refused
        get(f"{base}/slow"),  # timeout
        get(f"{base}/big"),  # over the size cap
        get(f"https://{base.removeprefix('http://')}/ok"),  # TLS to a plain HTTP port
        get("http://[not-a-host/ok"),  # malformed URL
    ]


def test_sync_answers(base: str) -> None:
    # Each call has a connection of its own (an event loop of its own, so
    # that its deadline can cut a read short).
    fetch = SyncFetcher(timeout=0.5, max_body=1000)
    r = fetch(HttpRequest("POST", f"{base}/ok", (("accept", "application/json"),), b"a=1"))
    assert r.status == 200 and r.body == b"POST application/json a=1"
    assert fetch(get(f"{base}/ok")).status == 200
    redirect = fetch(get(f"{base}/redirect"))
    assert redirect.status == 302 and redirect.header("location") == "/ok"  # not followed
    fetch.close()


def test_sync_failures_are_fetch_failed(base: str) -> None:
    fetch = SyncFetcher(timeout=0.3, max_body=1000)
    for request in failures(base):
        with pytest.raises(FetchFailed) as info:
            fetch(request)
        assert str(info.value) == MESSAGE, request.url
    fetch.close()


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.anyio
async def test_async_answers_and_failures(base: str, anyio_backend: str) -> None:
    fetch = AsyncFetcher(timeout=0.3, max_body=1000)
    r = await fetch(HttpRequest("POST", f"{base}/ok", (), b"b=2"))
    assert r.status == 200 and r.body.endswith(b"b=2")
    assert (await fetch(get(f"{base}/ok"))).header("x-conn") == r.header("x-conn")
    assert (await fetch(get(f"{base}/redirect"))).status == 302
    for request in failures(base):
        with pytest.raises(FetchFailed) as info:
            await fetch(request)
        assert str(info.value) == MESSAGE, request.url
    # Still usable after failures.
    assert (await fetch(get(f"{base}/ok"))).status == 200
    await fetch.aclose()


@pytest.mark.parametrize("path", ["/trickle", "/trickle-head"])
def test_sync_a_provider_that_trickles_is_given_up_at_the_deadline(base: str, path: str) -> None:
    # A third review: a byte every few seconds kept each call (and its pool
    # connection) for ever, every read well inside its own timeout; a fourth
    # expected the same of a head sent so.
    fetch = SyncFetcher(timeout=0.5, max_body=1_000_000)
    started = time.monotonic()
    with pytest.raises(FetchFailed):
        fetch(get(f"{base}{path}"))
    assert time.monotonic() - started < 3  # the deadline (0.5 s), not a minute
    fetch.close()


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/trickle", "/trickle-head"])
async def test_async_a_provider_that_trickles_is_given_up_at_the_deadline(base: str, anyio_backend: str,
                                                                         path: str) -> None:
    fetch = AsyncFetcher(timeout=0.5, max_body=1_000_000)
    started = time.monotonic()
    with pytest.raises(FetchFailed):
        await fetch(get(f"{base}{path}"))
    assert time.monotonic() - started < 3
    await fetch.aclose()


@pytest.mark.anyio
async def test_one_organizations_calls_hold_few_of_the_pool(base: str, anyio_backend: str) -> None:
    # A third review: one organization's slow provider took all 100 pooled
    # connections, and every other tenant's sign-ins waited 10 s and failed.
    import anyio

    from mcp_oauth_proxy.upstream.egress import Egress
    from mcp_oauth_proxy.upstream.http import PER_ORGANIZATION

    # The organizations' providers on loopback, let through for the test.
    fetch = AsyncFetcher(timeout=5, max_body=1000, egress=Egress(reachable=(ipaddress.ip_network("127.0.0.0/8"),)))
    HELD.clear()
    answers: list[int] = []

    async def call(organization: str | None, path: str) -> None:
        try:
            answers.append((await fetch(HttpRequest("GET", f"{base}{path}", public_only=organization))).status)
        except FetchFailed:
            answers.append(0)

    async with anyio.create_task_group() as tasks:
        for _ in range(PER_ORGANIZATION):
            tasks.start_soon(call, "acme", "/held")
        await anyio.sleep(0.5)  # all under way, held by the provider
        with anyio.fail_after(1):  # refused at once, not queued for the pool
            await call("acme", "/held")
        with anyio.fail_after(1):  # another organization's, and ours, go through
            await call("beta", "/ok")
            await call(None, "/ok")
        HELD.set()
    assert sorted(answers) == [0] + [200] * (PER_ORGANIZATION + 2)
    await fetch.aclose()
