"""Building the real apps for the adapter tests: tenants on ``http://<slug>.test``
whose upstream is a LocalIdP, and an MCP stand-in that echoes what the
guard handed it."""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from local_idp import CLIENT_ID, CLIENT_SECRET, LocalIdP

from mcp_oauth_proxy.adapters.asgi import BearerGuard, OAuthApp
from mcp_oauth_proxy.adapters.site import PRINCIPAL_KEY, UPSTREAM_TOKEN_KEY, Site
from mcp_oauth_proxy.adapters.wsgi import BearerGuardWSGI, OAuthWSGIApp
from mcp_oauth_proxy.app import ServerApp
from mcp_oauth_proxy.core.errors import OAuthError
from mcp_oauth_proxy.core.tenant import Tenant
from mcp_oauth_proxy.storage.memory import MemoryStore
from mcp_oauth_proxy.upstream import providers


def source(idp: LocalIdP, clock: Callable[[], float] = time.monotonic) -> providers.UpstreamSource:
    if idp.shape == "oidc":
        return providers.oidc(idp.url, CLIENT_ID, CLIENT_SECRET, clock=clock)
    return providers.github(CLIENT_ID, CLIENT_SECRET, authorization_endpoint=f"{idp.url}/authorize",
                            token_endpoint=f"{idp.url}/token", userinfo_endpoint=f"{idp.url}/user")


def tenant(slug: str) -> Tenant:
    return Tenant(slug=slug, issuer=f"http://{slug}.test", resource=f"http://{slug}.test/mcp",
                  scopes=("mcp",))


def site(idp: LocalIdP, slugs: tuple[str, ...] = ("acme",), clock: Callable[[], float] = time.monotonic,
         **kw: Any) -> Site:
    """``clock`` is the one OIDC discovery waits by."""
    return Site([(tenant(s), source(idp, clock)) for s in slugs], MemoryStore(), b"c" * 32, **kw)


def _echo_body(principal: Any, token: str | None, error: OAuthError | None) -> tuple[int, bytes]:
    if error is not None:
        return error.status, json.dumps({"error": error.error}).encode()
    return 200, json.dumps({"tenant": principal.tenant, "user_id": principal.user_id,
                            "client_id": principal.client_id, "scopes": list(principal.scopes),
                            "upstream_token": token}).encode()


async def echo(scope: Any, receive: Any, send: Any) -> None:
    """An MCP server stand-in: shows the principal and the upstream token."""
    token, error = None, None
    try:
        token = await scope[UPSTREAM_TOKEN_KEY]()
    except OAuthError as exc:
        error = exc
    status, body = _echo_body(scope[PRINCIPAL_KEY], token, error)
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def echo_wsgi(environ: Any, start_response: Any) -> list[bytes]:
    token, error = None, None
    try:
        token = environ[UPSTREAM_TOKEN_KEY]()
    except OAuthError as exc:
        error = exc
    status, body = _echo_body(environ[PRINCIPAL_KEY], token, error)
    start_response(f"{status} X", [("content-type", "application/json")])
    return [body]


def asgi_app(s: Site, timeout: float = 5.0) -> ServerApp:
    return ServerApp(s, OAuthApp(s, upstream_timeout=timeout), BearerGuard(echo, s, upstream_timeout=timeout))


def wsgi_app(s: Site, timeout: float = 5.0) -> Any:
    oauth = OAuthWSGIApp(s, upstream_timeout=timeout)
    guarded = BearerGuardWSGI(echo_wsgi, s, upstream_timeout=timeout)

    def app(environ: Any, start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        return (guarded if path == "/mcp" or path.startswith("/mcp/") else oauth)(environ, start_response)

    return app
