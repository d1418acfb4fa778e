"""The console's "check" of an OAuth configuration: what discovery finds or
why it fails, bounded all told (an operator chooses where it goes: a server
that sends a byte now and then, or without end, holds a worker thread for
the deadline at most), two at a time."""

from __future__ import annotations

import functools
import http.server
import ipaddress
import json
import threading
import time
from typing import Iterator

import pytest

from mcp_oauth_proxy.admin import discovery_check
from mcp_oauth_proxy.admin.discovery_check import bounded_fetch, check_discovery
from mcp_oauth_proxy.core.models import OAuthConfig
from mcp_oauth_proxy.upstream.egress import Egress


@pytest.fixture
def provider() -> Iterator[tuple[str, dict]]:
    state = {"mode": "good"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
            if state["mode"] == "trickle-head":
                # The status line itself a byte at a time: no answer has begun.
                for byte in b"HTTP/1.1 200 OK\r\nx-slow: " + b"y" * 200:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
                return
            if state["mode"] == "trickle":
                self.send_response(200)
                self.end_headers()
                for _ in range(50):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.2)
                return
            body = json.dumps({"issuer": issuer if state["mode"] == "good" else "https://other.example",
                               "authorization_endpoint": issuer + "/a", "token_endpoint": issuer + "/t"}).encode()
            if state["mode"] == "huge":
                body = b" " * (discovery_check.MAX_DOCUMENT + 1)
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()


def _config(issuer: str) -> OAuthConfig:
    return OAuthConfig("acme", "idp", "oidc", "cid", "secret", issuer=issuer)


# The operator lets organizations' configurations reach this provider on loopback.
LOOPBACK = Egress(reachable=(ipaddress.ip_network("127.0.0.0/8"),))


def _check(config: OAuthConfig) -> object:
    return check_discovery(config, fetch=functools.partial(bounded_fetch, egress=LOOPBACK))


def test_it_shows_what_discovery_finds_or_why_not(provider: tuple[str, dict]) -> None:
    url, state = provider
    found = _check(_config(url))
    assert found.ok and dict(found.found)["token_endpoint"] == url + "/t"
    state["mode"] = "other-issuer"
    refused = _check(_config(url))
    assert not refused.ok and "names another issuer" in refused.summary
    assert not _check(_config("http://127.0.0.1:1")).ok


def test_a_trickling_or_huge_answer_ends_at_the_deadline_or_the_cap(provider: tuple[str, dict],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from mcp_oauth_proxy.core.errors import FetchFailed
    from mcp_oauth_proxy.core.http import HttpRequest

    url, state = provider
    state["mode"] = "trickle"
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="no whole answer"):
        bounded_fetch(HttpRequest("GET", url), deadline=1.0)
    assert time.monotonic() - started < 5  # not the 10 s the server would take
    state["mode"] = "huge"
    with pytest.raises(FetchFailed, match="larger than"):
        bounded_fetch(HttpRequest("GET", url))
    # A fourth review: the deadline was looked at between body chunks only;
    # a head trickled one byte at a time held the check (and one of the two
    # check places) for as long as the provider liked.
    state["mode"] = "trickle-head"
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="no whole answer"):
        bounded_fetch(HttpRequest("GET", url), deadline=1.0)
    assert time.monotonic() - started < 3


def test_two_checks_at_a_time(provider: tuple[str, dict]) -> None:
    url, _ = provider
    release = threading.Event()
    entered = threading.Semaphore(0)

    def slow(request: object) -> object:
        entered.release()
        release.wait(5)
        raise discovery_check.FetchFailed("released")

    threads = [threading.Thread(target=check_discovery, args=(_config(url), slow)) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in threads:
        assert entered.acquire(timeout=5)
    busy = check_discovery(_config(url), slow)
    release.set()
    for t in threads:
        t.join()
    assert not busy.ok and "under way" in busy.summary


def test_the_console_session_cookie_is_never_forwarded_to_a_backend() -> None:
    from mcp_oauth_proxy.core.cookies import is_ours

    assert is_ours("mcp_admin_session") and is_ours("__Host-mcp_admin_session")
