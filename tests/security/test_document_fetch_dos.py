"""Denial of service through Client ID Metadata Document fetches, which
anyone can start: a host that drips its answer (or its TLS handshake) a byte
at a time is cut off at one deadline for the whole fetch; a fetch stops when
the requester goes away; no more than a few run at once (the rest get a 503
with Retry-After at once); a document that failed is not fetched again at
once; revocation and introspection fetch nothing and are limited per
address. Against real dripping servers on loopback, through the real ASGI
and WSGI apps and a real server process."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlencode, urlsplit

import anyio
import httpx
import pytest

from https_server import DocumentServer, serve_document
from processes import free_port, stop_process, tail, wait_until
from support import CHALLENGE, REDIRECT, tenant, upstream
from mcp_oauth_proxy.adapters.asgi import OAuthApp
from mcp_oauth_proxy.adapters.site import Site
from mcp_oauth_proxy.adapters.wsgi import OAuthWSGIApp
from mcp_oauth_proxy.core.effects import FetchClientMetadata
from mcp_oauth_proxy.core.errors import FetchFailed
from mcp_oauth_proxy.core.tenant import RateLimit, RateLimits
from mcp_oauth_proxy.storage.memory import MemoryStore
from mcp_oauth_proxy.upstream.client_metadata import DocumentFetcher

HOST = "acme.test"
# A byte every 20 ms: no single read waits long, the whole answer takes seconds.
DRIP = 0.02
WAIT = 20.0  # the most a test polls for something to happen


def until(check: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < end, f"still waiting for {what}"
        time.sleep(0.02)


async def until_async(check: Callable[[], bool], what: str) -> None:
    with anyio.fail_after(WAIT):
        while not check():
            await anyio.sleep(0.02)


def _fetch(fetcher: DocumentFetcher, effect: FetchClientMetadata, driver: str) -> Any:
    if driver == "sync":
        return fetcher.fetch(effect)
    return anyio.run(fetcher.fetch_async, effect, backend=driver)


@pytest.mark.parametrize("driver", ["sync", "asyncio", "trio"])
def test_a_dripping_document_is_cut_off_at_one_deadline_for_the_whole_fetch(doc_server, driver):
    doc_server.drip = DRIP
    url = serve_document(doc_server)
    fetcher = DocumentFetcher(verify=doc_server.trust(), deadline=0.5)
    with pytest.raises(FetchFailed, match="in time"):
        _fetch(fetcher, FetchClientMetadata(url, allow_loopback=True), driver)
    # The connection was closed while the answer was still dripping.
    until(lambda: doc_server.drips.now == 0, "the drip to end")
    assert len(doc_server.drips.cut_off()) == 1


class SilentHost:
    """A host that accepts TCP connections and never says a word (no TLS
    handshake); it counts the connections its peer has closed."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.closed = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            try:
                while conn.recv(4096):
                    pass  # the ClientHello, unanswered
            except OSError:
                pass
        self.closed += 1

    def url(self, path: str = "/client.json") -> str:
        return f"https://127.0.0.1:{self.port}{path}"


@pytest.fixture
def silent_host() -> Iterator[SilentHost]:
    host = SilentHost()
    yield host
    host.listener.close()


@pytest.mark.parametrize("driver", ["sync", "asyncio", "trio"])
def test_a_host_that_never_answers_the_tls_handshake_keeps_no_socket_at_the_deadline(silent_host, driver):
    fetcher = DocumentFetcher(deadline=0.3)
    for i in range(3):
        with pytest.raises(FetchFailed, match="in time"):
            _fetch(fetcher, FetchClientMetadata(silent_host.url(f"/{driver}/{i}.json"), allow_loopback=True), driver)
    until(lambda: silent_host.closed == silent_host.accepted == 3, "every connection to be closed")


# -- through the apps -------------------------------------------------------------


def _site(fetcher: DocumentFetcher, **limits: RateLimit) -> Site:
    t = tenant(issuer=f"http://{HOST}", resource=f"http://{HOST}/mcp", upstream=upstream(),
               client_metadata_allow_loopback=True, rate_limits=RateLimits(**limits))
    return Site([t], MemoryStore(), b"c" * 32, documents=fetcher)


def _authorize_query(client_id: str) -> str:
    return urlencode({"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
                      "code_challenge": CHALLENGE, "code_challenge_method": "S256", "state": "s"})


class Exchange:
    """One request to an ASGI app, its client going away when ``gone`` is set."""

    def __init__(self, method: str, path: str, query: str = "", body: bytes = b"", client: str = "203.0.113.5") -> None:
        self.scope = {
            "type": "http", "method": method, "path": path, "query_string": query.encode(), "scheme": "http",
            "headers": [(b"host", HOST.encode())]
            + ([(b"content-type", b"application/x-www-form-urlencoded")] if body else []),
            "client": (client, 40000), "server": (HOST, 80),
        }
        self.body = body
        self.gone = anyio.Event()
        self.sent: list[dict[str, Any]] = []
        self._body_read = False

    async def receive(self) -> dict[str, Any]:
        if not self._body_read:
            self._body_read = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def run(self, app: OAuthApp) -> Exchange:
        await app(self.scope, self.receive, self.send)
        return self

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    def header(self, name: str) -> str | None:
        return next((v.decode() for k, v in self.sent[0]["headers"] if k.decode().lower() == name), None)

    @property
    def text(self) -> str:
        return b"".join(m.get("body", b"") for m in self.sent[1:]).decode()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_fetch_stops_when_the_requester_disconnects(doc_server, backend):
    doc_server.drip = DRIP
    url = serve_document(doc_server)
    # A deadline far away: only the client's leaving can stop this fetch.
    app = OAuthApp(_site(DocumentFetcher(verify=doc_server.trust(), deadline=60)))

    async def main() -> Exchange:
        exchange = Exchange("GET", "/oauth/authorize", _authorize_query(url))
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(exchange.run, app)
            await until_async(lambda: doc_server.drips.now == 1, "the fetch to start")
            exchange.gone.set()
        return exchange

    exchange = anyio.run(main, backend=backend)
    assert exchange.sent == []  # nobody left to answer
    until(lambda: doc_server.drips.now == 0, "the drip to end")
    assert len(doc_server.drips.cut_off()) == 1


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_requester_leaving_during_the_tls_handshake_leaves_no_socket_behind(silent_host, backend):
    app = OAuthApp(_site(DocumentFetcher(deadline=60)))

    async def main() -> None:
        for i in range(3):
            exchange = Exchange("GET", "/oauth/authorize", _authorize_query(silent_host.url(f"/{backend}/{i}.json")))
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(exchange.run, app)
                await until_async(lambda: silent_host.accepted == i + 1, "the fetch to connect")
                exchange.gone.set()

    anyio.run(main, backend=backend)
    until(lambda: silent_host.closed == silent_host.accepted == 3, "every connection to be closed")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_one_requester_cannot_take_every_fetch_slot(doc_server, backend):
    doc_server.drip = DRIP
    app = OAuthApp(_site(DocumentFetcher(verify=doc_server.trust(), deadline=60, max_fetches=10,
                                         max_fetches_per_requester=2)))

    def authorize(name: str, client: str) -> Exchange:
        return Exchange("GET", "/oauth/authorize", _authorize_query(serve_document(doc_server, name)), client=client)

    async def main() -> list[int]:
        # One host, from two addresses of its IPv6 /64, keeps two fetches busy...
        hogs = [authorize(f"/hog/{i}.json", f"2001:db8:1:2::{i + 1}") for i in range(2)]
        async with anyio.create_task_group() as tasks:
            for hog in hogs:
                tasks.start_soon(hog.run, app)
            await until_async(lambda: doc_server.drips.now == 2, "two fetches to start")
            # ... and its next ones are refused at once, wherever in the /64 it asks from;
            refused = [(await authorize(f"/more/{i}.json", f"2001:db8:1:2::{i + 9}").run(app)).status
                       for i in range(3)]
            # another host still gets a slot.
            other = authorize("/other.json", "203.0.113.9")
            tasks.start_soon(other.run, app)
            await until_async(lambda: doc_server.drips.now == 3, "the other host's fetch to start")
            for exchange in (*hogs, other):
                exchange.gone.set()
        return refused

    assert anyio.run(main, backend=backend) == [503, 503, 503]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_document_fetches_beyond_the_cap_are_answered_503_at_once(doc_server, backend):
    doc_server.drip = DRIP
    slow = [serve_document(doc_server, f"/slow/{i}.json") for i in range(2)]
    app = OAuthApp(_site(DocumentFetcher(verify=doc_server.trust(), deadline=60, max_fetches=2)))

    async def main() -> tuple[Exchange, Exchange]:
        holders = [Exchange("GET", "/oauth/authorize", _authorize_query(u)) for u in slow]
        async with anyio.create_task_group() as tasks:
            for holder in holders:
                tasks.start_soon(holder.run, app)
            await until_async(lambda: doc_server.drips.now == 2, "two fetches to start")
            # Both slots are taken: the next fetches are refused without a connection.
            page = await Exchange("GET", "/oauth/authorize",
                                  _authorize_query(serve_document(doc_server, "/third.json"))).run(app)
            api = await Exchange("POST", "/oauth/token", body=urlencode(
                {"grant_type": "authorization_code", "code": "x", "redirect_uri": REDIRECT, "code_verifier": "v" * 43,
                 "client_id": serve_document(doc_server, "/fourth.json")}).encode()).run(app)
            for holder in holders:
                holder.gone.set()
        return page, api

    page, api = anyio.run(main, backend=backend)
    assert page.status == 503 and page.header("content-type").startswith("text/html")
    assert int(page.header("retry-after")) >= 1 and "try again" in page.text
    assert api.status == 503 and api.header("content-type") == "application/json"
    assert int(api.header("retry-after")) >= 1
    assert json.loads(api.text)["error"] == "temporarily_unavailable"
    assert doc_server.drips.most == 2
    assert "/third.json" not in doc_server.hits and "/fourth.json" not in doc_server.hits


def test_under_wsgi_a_dripping_document_frees_the_worker_at_the_deadline_and_excess_gets_503(doc_server):
    doc_server.drip = DRIP
    app = OAuthWSGIApp(_site(DocumentFetcher(verify=doc_server.trust(), deadline=1.0, max_fetches=1)))
    answers: list[httpx.Response] = []

    def get(path: str) -> httpx.Response:
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url=f"http://{HOST}") as http:
            return http.get("/oauth/authorize?" + _authorize_query(serve_document(doc_server, path)))

    worker = threading.Thread(target=lambda: answers.append(get("/slow.json")))
    worker.start()
    until(lambda: doc_server.drips.now == 1, "the fetch to start")
    busy = get("/other.json")
    assert busy.status_code == 503 and busy.headers["content-type"].startswith("text/html")
    assert int(busy.headers["retry-after"]) >= 1
    worker.join(WAIT)
    assert not worker.is_alive()
    held = answers[0]
    assert held.status_code == 400 and "did not answer in time" in held.text
    until(lambda: doc_server.drips.now == 0, "the drip to end")
    assert len(doc_server.drips.cut_off()) == 1 and "/other.json" not in doc_server.hits


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("driver", ["sync", "asyncio"])
def test_a_document_that_failed_is_not_fetched_again_at_once(doc_server, driver):
    clock = Clock()
    fetcher = DocumentFetcher(verify=doc_server.trust(), clock=clock)
    missing = FetchClientMetadata(doc_server.url("/missing.json"), allow_loopback=True)
    broken = FetchClientMetadata(doc_server.url("/broken.json"), allow_loopback=True)
    doc_server.routes["/broken.json"] = (302, {"location": "https://example.org/"}, b"")
    for _ in range(3):
        assert _fetch(fetcher, missing, driver).status == 404
        with pytest.raises(FetchFailed, match="redirects"):
            _fetch(fetcher, broken, driver)
    assert doc_server.hits == {"/missing.json": 1, "/broken.json": 1}
    clock.now += 60  # remembered only a short while
    _fetch(fetcher, missing, driver)
    assert doc_server.hits["/missing.json"] == 2


# -- revocation and introspection -------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_revoke_and_introspect_fetch_no_document_and_are_limited_per_address(doc_server, backend):
    app = OAuthApp(_site(DocumentFetcher(verify=doc_server.trust()), revoke=RateLimit(per_address=30),
                         introspect=RateLimit(per_address=30)))

    async def main() -> dict[str, list[int]]:
        statuses: dict[str, list[int]] = {"revoke": [], "introspect": []}
        for endpoint in statuses:
            for i in range(40):
                client_id = serve_document(doc_server, f"/{endpoint}/{i}.json")
                form = {"token": f"mcp_rt_{i}", "client_id": client_id}
                if endpoint == "introspect":
                    form["client_secret"] = "guess"
                exchange = await Exchange("POST", f"/oauth/{endpoint}", body=urlencode(form).encode()).run(app)
                statuses[endpoint].append(exchange.status)
        return statuses

    statuses = anyio.run(main, backend=backend)
    assert statuses["revoke"] == [200] * 30 + [429] * 10
    assert statuses["introspect"] == [401] * 30 + [429] * 10
    assert doc_server.hits == {}


# -- a real server process ---------------------------------------------------------

CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
database = "memory://"

[[tenants]]
slug = "acme"
issuer = "http://127.0.0.1:{port}"
resource = "http://127.0.0.1:{port}/mcp"
client_metadata_allow_loopback = true

[tenants.rate_limits.revoke]
per_address = 50

[tenants.upstream]
kind = "github"
client_id = "unused"
client_secret = "unused"
"""


@pytest.fixture(params=["asyncio", "trio"])
def server(request: pytest.FixtureRequest, doc_server: DocumentServer, tmp_path: Path) -> Iterator[tuple[int, int]]:
    """(port, pid) of ``mcp-oauth-proxy serve`` trusting the document server."""
    port = free_port()
    config = tmp_path / "serve.toml"
    config.write_text(CONFIG.format(port=port))
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "mcp_oauth_proxy.cli", "serve", "--config", str(config)]
    if request.param == "trio":
        cmd.append("--trio")
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=tmp_path,
                                env={**os.environ, "SSL_CERT_FILE": doc_server.cert})
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/.well-known/oauth-authorization-server",
                                     trust_env=False).status_code == 200, WAIT, "the server", proc, log)
        yield port, proc.pid
    finally:
        stop_process(proc)
    assert "Traceback" not in tail(log), tail(log)


def _open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _fire_and_forget(port: int, requests: list[bytes]) -> list[socket.socket]:
    sockets = []
    for request in requests:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        sockets.append(s)
    return sockets


def test_fire_and_forget_requests_leave_no_fetch_or_connection_behind(server, doc_server):
    port, pid = server
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, trust_env=False, timeout=WAIT) as http:
        # Warm up (one document fetched), then count.
        assert http.get("/oauth/authorize?" + _authorize_query(serve_document(doc_server))).status_code == 200
        baseline = _open_files(pid)
        # Revocation fetches no document, and is limited per address.
        statuses = [http.post("/oauth/revoke", data={"token": "mcp_rt_x", "client_id": serve_document(
            doc_server, f"/revoke/{i}.json")}).status_code for i in range(60)]
        assert statuses == [200] * 50 + [429] * 10
    hit = dict(doc_server.hits)
    revokes = [f"POST /oauth/revoke HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: "
               f"application/x-www-form-urlencoded\r\ncontent-length: {len(body)}\r\n\r\n{body}".encode()
               for body in (urlencode({"token": "mcp_rt_x", "client_id": doc_server.url(f"/gone/{i}.json")})
                            for i in range(100))]
    for s in _fire_and_forget(port, revokes):
        s.close()
    # Authorizations whose documents drip, dropped by their clients as soon
    # as the fetches have started: no more fetches than the cap at once, and
    # every one stopped long before its drip (or its deadline) would end.
    doc_server.drip = DRIP
    authorizes = [f"GET /oauth/authorize?{_authorize_query(serve_document(doc_server, f'/drip/{i}.json'))} "
                  f"HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n".encode() for i in range(30)]
    sockets = _fire_and_forget(port, authorizes)
    # Each one is being fetched, or has had its answer (a 503) already.
    until(lambda: doc_server.drips.now + len(select.select(sockets, [], [], 0)[0]) == len(sockets),
          "the fetches to start")
    for s in sockets:
        s.close()
    until(lambda: doc_server.drips.now == 0, "the drips to end")
    until(lambda: _open_files(pid) <= baseline, f"open files back to {baseline}")
    assert doc_server.drips.most <= 10
    cut = doc_server.drips.cut_off()
    assert len(cut) == len(doc_server.drips.ended) == doc_server.drips.most
    # Stopped by the disconnect, not by the 5 s deadline: far fewer bytes than
    # five seconds of dripping would have sent.
    assert all(sent < 5 / DRIP / 2 for sent, _ in cut), cut
    fetched = {path for path in doc_server.hits if path not in hit}
    assert all(path.startswith("/drip/") for path in fetched), fetched
    assert not any(urlsplit(p).path.startswith(("/revoke/", "/gone/")) for p in doc_server.hits)
