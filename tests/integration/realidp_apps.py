"""The proxy as an embedding application would set it up: one tenant whose
upstream is the identity provider process, the OAuth endpoints
(``OAuthApp``/``OAuthWSGIApp``) and a tiny protected app behind the bearer
guard (``BearerGuard``/``BearerGuardWSGI``), side by side on one host.

The protected app answers with what the guard told it (the principal) and
with the person's profile, fetched from the identity provider with the
upstream access token the guard hands it, so a test sees that token work.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Iterable

import anyio
import httpx

from mcp_oauth_proxy.adapters.asgi import BearerGuard, OAuthApp
from mcp_oauth_proxy.adapters.site import PRINCIPAL_KEY, UPSTREAM_TOKEN_KEY, Site
from mcp_oauth_proxy.adapters.wsgi import BearerGuardWSGI, OAuthWSGIApp
from mcp_oauth_proxy.core.tenant import Tenant, Upstream
from mcp_oauth_proxy.storage.memory import MemoryStore
from mcp_oauth_proxy.upstream import providers

from realidp import IdP

# Only the Site's upstream source is used; the tenant's own upstream field
# is replaced by what the source resolves.
_PLACEHOLDER = Upstream(authorization_endpoint="", token_endpoint="", client_id="")

# Paths answered by the OAuth app; everything else goes through the guard
# (which serves the RFC 9728 metadata itself).
_OAUTH_PREFIXES = ("/oauth/", "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")


def upstream_source(idp: IdP) -> providers.UpstreamSource:
    """The tenant's upstream, as the ``oidc`` and ``github`` presets make it."""
    if idp.mode == "oidc":
        return providers.oidc(idp.issuer, idp.client_id, idp.client_secret,
                              scopes=("openid", "profile", "email", "offline_access"))
    return providers.github(idp.client_id, idp.client_secret,
                            authorization_endpoint=idp.authorization_endpoint,
                            token_endpoint=idp.token_endpoint,
                            userinfo_endpoint=idp.userinfo_endpoint)


def make_site(idp: IdP, issuer: str, resource: str) -> Site:
    tenant = Tenant(slug="acme", issuer=issuer, resource=resource, upstream=_PLACEHOLDER, scopes=("mcp",),
                    required_scopes=("mcp",))
    return Site([(tenant, upstream_source(idp))], MemoryStore(), os.urandom(32), store_blocks=False)


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def _report(principal: Any, upstream_token: str, profile: httpx.Response) -> bytes:
    return json.dumps({
        "user_id": principal.user_id,
        "client_id": principal.client_id,
        "scopes": list(principal.scopes),
        "upstream_token": fingerprint(upstream_token),
        "upstream_status": profile.status_code,
        "upstream_profile": profile.json() if profile.status_code == 200 else None,
    }).encode()


# -- ASGI ----------------------------------------------------------------------


def protected_asgi(userinfo_endpoint: str) -> Callable:
    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        principal = scope[PRINCIPAL_KEY]
        token = await scope[UPSTREAM_TOKEN_KEY]()
        async with httpx.AsyncClient(trust_env=False) as http:
            profile = await http.get(userinfo_endpoint, headers={"authorization": f"Bearer {token}",
                                                                 "accept": "application/json"})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": _report(principal, token, profile)})

    return app


class AsgiSite:
    """OAuth endpoints plus a guarded app on one host."""

    def __init__(self, site: Site, protected: Callable) -> None:
        self.oauth = OAuthApp(site, upstream_timeout=10)
        self.guarded = BearerGuard(protected, site, upstream_timeout=10)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["path"].startswith(_OAUTH_PREFIXES):
            return await self.oauth(scope, receive, send)
        return await self.guarded(scope, receive, send)

    async def aclose(self) -> None:
        await self.oauth.aclose()


@asynccontextmanager
async def lifespan(app: Callable, deadline: float = 10) -> AsyncIterator[None]:
    """Run the ASGI lifespan protocol, as a server does around its requests."""
    to_app, app_inbox = anyio.create_memory_object_stream[dict](4)
    app_outbox, from_app = anyio.create_memory_object_stream[dict](4)
    async with anyio.create_task_group() as tg:
        tg.start_soon(app, {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                      app_inbox.receive, app_outbox.send)
        with anyio.fail_after(deadline):
            await to_app.send({"type": "lifespan.startup"})
            assert (await from_app.receive())["type"] == "lifespan.startup.complete"
        try:
            yield
        finally:
            with anyio.fail_after(deadline):
                await to_app.send({"type": "lifespan.shutdown"})
                assert (await from_app.receive())["type"] == "lifespan.shutdown.complete"


# -- WSGI ----------------------------------------------------------------------


def protected_wsgi(userinfo_endpoint: str) -> Callable:
    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        principal = environ[PRINCIPAL_KEY]
        token = environ[UPSTREAM_TOKEN_KEY]()
        with httpx.Client(trust_env=False) as http:
            profile = http.get(userinfo_endpoint, headers={"authorization": f"Bearer {token}",
                                                           "accept": "application/json"})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [_report(principal, token, profile)]

    return app


class WsgiSite:
    def __init__(self, site: Site, protected: Callable) -> None:
        self.oauth = OAuthWSGIApp(site, upstream_timeout=10)
        self.guarded = BearerGuardWSGI(protected, site, upstream_timeout=10)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith(_OAUTH_PREFIXES):
            return self.oauth(environ, start_response)
        return self.guarded(environ, start_response)
