"""Requests aimed past the tenant's protected path: dot segments, raw or
percent-encoded, encoded slashes and backslashes. Through ``mcp-oauth-proxy
serve`` (asyncio and trio) in front of the real backend process, which must
never see a path outside its own prefix; and at the ASGI and WSGI guards,
which pick the tenant by path and must refuse such a path before they do."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote
from wsgiref.util import setup_testing_defaults

import anyio
import pytest
from forward_servers import Proxy, backend, proxy, requests_with, seen, upstream  # noqa: F401 (fixtures)
from local_idp import LocalIdP
from proxy_apps import site
from raw_http import exchange

from mcp_oauth_proxy.adapters.asgi import BearerGuard
from mcp_oauth_proxy.adapters.paths import is_safe_path
from mcp_oauth_proxy.adapters.wsgi import BearerGuardWSGI

# Each aims at a path outside /mcp/ on the backend, or one a backend could
# read as such: dot segments raw or percent-encoded, encoded slashes and
# backslashes (a separator to some servers), raw backslashes, and "..;"
# (a dot segment to servers that drop path parameters).
TRAVERSALS = [
    "/mcp/../admin", "/mcp/./../../etc", "/mcp/..", "/mcp/.", "/mcp/x/./y",
    "/mcp/%2e%2e/admin", "/mcp/%2E%2e/admin", "/mcp/.%2e/admin", "/mcp/%2e", "/mcp/x/%2e%2e%2f%2e%2e%2fadmin",
    "/mcp/a%2f..%2f..%2fadmin", "/mcp%2f..%2fadmin", "/mcp/a%2Fb", "/mcp/..%5cadmin", "/mcp/a%5Cb",
    "/mcp/a\\..\\..\\admin", "/mcp/..;/admin",
    # a lax decoder reads an overlong or broken UTF-8 escape as a dot, and NUL as the end
    "/mcp/%c0%ae%c0%ae/admin", "/mcp/%e0%80%ae/admin", "/mcp/.%00./admin", "/mcp/%00/x", "/mcp/a%0d%0ab",
]


def _under_mcp(path: str) -> bool:
    """Whether a path as a backend reads it (decoded once) stays under /mcp."""
    segments = unquote(path).split("/")
    return segments[:2] == ["", "mcp"] and not any(s in (".", "..") or "\\" in s for s in segments)


def test_dot_segments_never_reach_the_backend(proxy: Proxy) -> None:
    probe = f"probe=traversal-{proxy.loop}"
    for i, path in enumerate(TRAVERSALS):
        answer = exchange(proxy.base, "GET", f"{path}?{probe}-{i}", [("Authorization", f"Bearer {proxy.access_token}")])
        assert answer.status == 400, (path, answer)
        assert json.loads(answer.body)["error"] == "invalid_request", (path, answer)
        assert requests_with(proxy.backend, f"{probe}-{i}") == [], path
    # The same token on a path under /mcp does arrive: the probes look in the right place.
    fine = exchange(proxy.base, "GET", f"/mcp/x/y?{probe}-ok", [("Authorization", f"Bearer {proxy.access_token}")])
    assert fine.status == 404  # the backend's own answer
    assert [(r["path"], r["raw_path"]) for r in requests_with(proxy.backend, f"{probe}-ok")] == [("/mcp/x/y",) * 2]
    for request in seen(proxy.backend)["seen"]:
        assert _under_mcp(request["path"]) and _under_mcp(request["raw_path"]), request


def _asgi_call(app: Any, raw_path: str) -> tuple[int, bytes]:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": unquote(raw_path), "raw_path": raw_path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"acme.test")], "client": ("198.51.100.7", 1), "server": ("acme.test", 80)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    anyio.run(app, scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def _wsgi_call(app: Any, raw_path: str) -> tuple[int, bytes]:
    environ: dict[str, Any] = {"PATH_INFO": unquote(raw_path, "latin-1"), "HTTP_HOST": "acme.test"}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, h: status.append(s)))
    return int(status[0].split()[0]), body


@pytest.mark.parametrize("path", TRAVERSALS)
def test_the_guards_refuse_dot_segments_before_they_pick_a_tenant(upstream: LocalIdP, path: str) -> None:
    # The tenant is picked, and the token checked, by path: a path that a
    # backend would read otherwise is refused before either (no 401 here).
    reached: list[str] = []

    async def asgi_backend(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    def wsgi_backend(environ: Any, start_response: Any) -> list[bytes]:
        reached.append(environ["PATH_INFO"])
        return []

    the_site = site(upstream)
    answers = [_asgi_call(BearerGuard(asgi_backend, the_site), path)]
    if path != "/mcp/a%2Fb":  # a WSGI app reads PATH_INFO, decoded: /mcp/a/b, as the guard does
        answers.append(_wsgi_call(BearerGuardWSGI(wsgi_backend, the_site), path))
    for status, body in answers:
        assert status == 400 and json.loads(body)["error"] == "invalid_request", (status, body)
    assert reached == []


@pytest.mark.parametrize(("path", "safe"), [
    ("/mcp", True), ("/", True), ("/mcp/", True), ("/mcp//x", True), ("/mcp/x.y", True), ("/mcp/...", True),
    ("/mcp/..x", True), ("/mcp/x..", True), ("/mcp/a;b", True), ("/mcp/%41b", True), ("/mcp/%25", True),
    ("/.well-known/oauth-protected-resource/mcp", True),
    ("/mcp/%252e%252e", False),  # "%2e%2e" decoded once: ".." to a backend that decodes twice
    ("/mcp/%2541", False), ("/mcp/%25zz", True),
    ("/mcp/.", False), ("/mcp/..", False), ("/mcp/../x", False), ("/./mcp", False), ("/mcp/%2e", False),
    ("/mcp/%2E%2E", False), ("/mcp/.%2e/x", False), ("/mcp/..;x/y", False), ("/mcp/.;", False),
    ("/mcp/a%2fb", False), ("/mcp/a%2Fb", False), ("/mcp/a%5cb", False), ("/mcp/a\\b", False), ("\\mcp", False),
    ("/mcp/caf%C3%A9", True), ("/mcp/%ef%bc%8e", True), ("/mcp/%c0%ae", False), ("/mcp/%ff", False),
    ("/mcp/%00", False), ("/mcp/%7f", False), ("/mcp/%09", False),
])
def test_a_path_passes_only_if_its_segments_say_where_it_goes(path: str, safe: bool) -> None:
    assert is_safe_path(path) is safe
