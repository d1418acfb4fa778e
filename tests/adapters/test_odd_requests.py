"""Odd but possible inputs to the adapters: a Content-Length too long for
int(), one in non-ASCII digits, required scopes given as a list. Each gets
a well-formed answer, never a 500."""

from __future__ import annotations

import io
import json
from typing import Any

import anyio
import pytest

from mcp_oauth_proxy.adapters.asgi import BearerGuard, OAuthApp
from mcp_oauth_proxy.adapters.forward import Backend, Forwarder
from mcp_oauth_proxy.adapters.site import PRINCIPAL_KEY, UPSTREAM_TOKEN_KEY, Site
from mcp_oauth_proxy.adapters.wsgi import BearerGuardWSGI, OAuthWSGIApp
from mcp_oauth_proxy.core.models import Principal
from mcp_oauth_proxy.storage.memory import MemoryStore
from support import tenant

HUGE = b"9" * 5000  # int() refuses more than 4300 digits


def _site() -> Site:
    return Site([tenant()], MemoryStore(), b"k" * 32, store_blocks=False)


async def _call(app: Any, scope: dict[str, Any], body: bytes = b"") -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "method": method, "scheme": "https", "path": path, "query_string": b"",
            "headers": [(b"host", b"acme.example.com"), *headers], "client": ("127.0.0.1", 4000)}


def test_asgi_a_content_length_too_long_to_read_is_too_large() -> None:
    status, headers, body = anyio.run(_call, OAuthApp(_site()), _scope("POST", "/oauth/token", [
        (b"content-type", b"application/x-www-form-urlencoded"), (b"content-length", HUGE)]))
    assert status == 413 and json.loads(body)["error"] == "invalid_request"


def test_the_forwarder_refuses_a_content_length_too_long_to_read() -> None:
    site = _site()
    forwarder = Forwarder(site, {"acme": Backend("http://127.0.0.1:9/mcp", "/mcp")})
    principal = Principal(tenant="acme", user_id="u", client_id="c", scopes=("mcp",), expires_at=2**40,
                          grant_id="g", resource="https://acme.example.com/mcp")

    async def no_token() -> str:
        raise AssertionError("not asked for")

    scope = {**_scope("POST", "/mcp", [(b"content-length", HUGE)]), PRINCIPAL_KEY: principal,
             UPSTREAM_TOKEN_KEY: no_token}
    status, _, body = anyio.run(_call, forwarder, scope)
    assert status == 413 and json.loads(body)["error"] == "invalid_request"


@pytest.mark.parametrize("length", ["9" * 5000, "\u00b2", "\u0663", "-1", "1e3", "0" * 30 + "24", " 24 "])
def test_wsgi_odd_content_lengths_are_answered(length: str) -> None:
    app = OAuthWSGIApp(_site())
    statuses: list[str] = []
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/oauth/token", "HTTP_HOST": "acme.example.com",
               "wsgi.url_scheme": "https", "CONTENT_TYPE": "application/x-www-form-urlencoded",
               "CONTENT_LENGTH": length, "wsgi.input": io.BytesIO(b"grant_type=refresh_token")}
    body = b"".join(app(environ, lambda status, headers: statuses.append(status)))
    status = int(statuses[0].split()[0])
    if length == "9" * 5000:
        assert status == 413 and json.loads(body)["error"] == "invalid_request"
    else:  # the body read (by its length, or to its end), and answered: this grant names no client
        assert status == 401 and json.loads(body)["error"] == "invalid_client"


def test_required_scopes_may_be_a_list_but_not_one_string() -> None:
    site = _site()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("no credentials were sent")

    guard = BearerGuard(app, site, required_scopes=["mcp", "admin"])
    for _ in range(2):  # the second answer is the remembered one
        status, headers, _ = anyio.run(_call, guard, _scope("GET", "/mcp", []))
        assert status == 401 and b'scope="mcp admin"' in headers[b"www-authenticate"]
    with pytest.raises(TypeError, match="not one string"):
        BearerGuard(app, site, required_scopes="mcp")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not one string"):
        BearerGuardWSGI(lambda e, s: [], site, required_scopes="mcp")  # type: ignore[arg-type]
