"""Every whole answer says its length once, under ASGI and WSGI: no chunked
framing for a small JSON body, and no duplicate Content-Length."""

from __future__ import annotations

import io
import json
from typing import Any

import anyio

from mcp_oauth_proxy.adapters.asgi import BearerGuard, OAuthApp
from mcp_oauth_proxy.adapters.site import Site
from mcp_oauth_proxy.adapters.wsgi import OAuthWSGIApp
from mcp_oauth_proxy.storage.memory import MemoryStore
from support import tenant


def _site() -> Site:
    return Site([tenant()], MemoryStore(), b"k" * 32, store_blocks=False)


async def _asgi(app: Any, method: str, path: str, body: bytes = b"") -> tuple[list[tuple[bytes, bytes]], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"host", b"acme.example.com"), (b"content-type", b"application/x-www-form-urlencoded")]
    await app({"type": "http", "method": method, "scheme": "https", "path": path, "query_string": b"",
               "headers": headers, "client": ("127.0.0.1", 4000)}, receive, send)
    return sent[0]["headers"], b"".join(m.get("body", b"") for m in sent[1:])


def test_asgi_answers_say_their_length_once() -> None:
    site = _site()

    async def never(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("no credentials were sent")

    for app, method, path, body in [
        (OAuthApp(site), "GET", "/.well-known/oauth-authorization-server", b""),
        (OAuthApp(site), "POST", "/oauth/revoke", b"token=x&client_id=nobody"),  # 401 invalid_client
        (OAuthApp(site), "GET", "/oauth/authorize", b""),  # an HTML error page
        (BearerGuard(never, site), "GET", "/mcp", b""),  # the guard's 401, remembered the second time
        (BearerGuard(never, site), "GET", "/mcp", b""),
    ]:
        headers, sent = anyio.run(_asgi, app, method, path, body)
        lengths = [v for k, v in headers if k == b"content-length"]
        assert lengths == [str(len(sent)).encode()], (path, headers)


def _wsgi(app: Any, method: str, path: str, body: bytes, content_type: str) -> tuple[list[tuple[str, str]], bytes]:
    seen: list[list[tuple[str, str]]] = []
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "HTTP_HOST": "acme.example.com",
               "wsgi.url_scheme": "https", "CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body)}
    sent = b"".join(app(environ, lambda status, headers: seen.append(headers)))
    return seen[0], sent


def test_wsgi_a_revocation_says_its_length_once() -> None:
    app = OAuthWSGIApp(_site())
    registration = json.dumps({"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none",
                               "client_name": "framing"}).encode()
    _, sent = _wsgi(app, "POST", "/oauth/register", registration, "application/json")
    client_id = json.loads(sent)["client_id"]
    # RFC 7009 §2.2: 200 with an empty body, for a token it does not know.
    headers, sent = _wsgi(app, "POST", "/oauth/revoke", f"token=x&client_id={client_id}".encode(),
                          "application/x-www-form-urlencoded")
    assert sent == b"" and [v for k, v in headers if k.lower() == "content-length"] == ["0"]
