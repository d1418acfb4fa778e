"""Token verifiers for the official ``mcp`` Python SDK, so an MCP server
built with it (``MCPServer(token_verifier=..., auth=AuthSettings(...))``)
uses mcp-oauth-proxy as its authorization server.

:class:`StoreTokenVerifier`
    reads our store directly (the MCP server shares the proxy's database and
    key ring) and runs the core's guard checks: the tenant, expiry and the
    audience (RFC 8707).
:class:`IntrospectionTokenVerifier`
    asks a remote mcp-oauth-proxy (RFC 7662) with the credentials of a
    resource server configured for the tenant (``[[tenants.resource_servers]]``).

Both give the SDK an ``AccessToken`` with ``subject`` (the person's id at
the upstream) and ``claims["iss"]`` (the tenant's issuer), so the SDK binds
sessions to the person, not only to the client. A refused token is None (the
SDK answers 401); an outage of the store or of the introspection endpoint
raises, so the client is not sent to sign in again for our failure.

Needs the ``mcp`` package (``pip install mcp``).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from mcp.server.auth.provider import AccessToken

from .adapters.site import Site
from .core.effects import run_async
from .core.errors import FetchFailed, InvalidToken
from .core.flows.guard import authenticate_bearer
from .core.http import HttpRequest, HttpResponse, Request
from .core.scopes import normalize_resource
from .core.store import Store
from .core.tenant import Tenant
from .runtime import async_performer, new_context
from .upstream.egress import Egress, egress_from

__all__ = ["IntrospectionFailed", "IntrospectionTokenVerifier", "StoreTokenVerifier"]

log = logging.getLogger("mcp_oauth_proxy")


async def _no_fetch(request: HttpRequest) -> HttpResponse:
    # Checking a bearer token never talks to the upstream.
    raise FetchFailed("no outbound HTTP while verifying a token")


class StoreTokenVerifier:
    """Verifies our access tokens against the store, as the guard does.

    ``site_or_store``: a :class:`~.adapters.site.Site` (``tenant`` is then a
    tenant's slug), or a :class:`~.core.store.Store` (``tenant`` is then the
    :class:`~.core.tenant.Tenant`, whose ``resource`` is the audience).
    ``store_blocks``: run store calls in a worker thread (SQL backends);
    defaults to the site's setting, and for a bare store to what its
    traits declare (core/store.py ``StoreTraits.blocks``).
    """

    def __init__(self, site_or_store: Site | Store, tenant: str | Tenant, *,
                 store_blocks: bool | None = None) -> None:
        if isinstance(site_or_store, Site):
            slug = tenant.slug if isinstance(tenant, Tenant) else tenant
            entry = site_or_store.entry(slug)
            if entry is None:
                raise ValueError(f"the site serves no tenant {slug!r}")
            self.tenant = entry.tenant
            store: Store = site_or_store.store
            blocks: bool | None = site_or_store.store_blocks if store_blocks is None else store_blocks
            self._cookie_key = site_or_store.cookie_key
        else:
            if not isinstance(tenant, Tenant):
                raise TypeError("with a bare store, give the Tenant (its issuer and resource are needed)")
            self.tenant = tenant
            store = site_or_store
            blocks = store_blocks  # None: the store's traits
            self._cookie_key = b""  # the guard signs nothing
        self._perform = async_performer(store, _no_fetch, store_blocks=blocks)
        self._path = urlsplit(self.tenant.resource).path or "/"

    async def verify_token(self, token: str) -> AccessToken | None:
        """The token's grant as the SDK's AccessToken; None if refused.
        Raises :class:`~.core.errors.StorageUnavailable` if the store is down."""
        request = Request("POST", self._path, headers=(("authorization", f"Bearer {token}"),))
        ctx = new_context(self.tenant, self._cookie_key)
        try:
            principal = await run_async(authenticate_bearer(request, ctx), self._perform)
        except InvalidToken:
            return None
        if principal is None:  # an empty token
            return None
        return AccessToken(
            token=token,
            client_id=principal.client_id,
            scopes=list(principal.scopes),
            expires_at=principal.expires_at,
            resource=principal.resource,
            subject=principal.user_id,
            claims={"iss": self.tenant.issuer},
        )


class IntrospectionFailed(Exception):
    """The introspection endpoint could not give an answer (unreachable,
    refused our credentials, an error status or an unreadable body)."""


def _basic(client_id: str, client_secret: str) -> str:
    # RFC 6749 §2.3.1: form-urlencode both before Basic.
    pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


class IntrospectionTokenVerifier:
    """Verifies tokens by RFC 7662 introspection at a remote mcp-oauth-proxy.

    ``introspection_url`` is the tenant's ``{issuer}/oauth/introspect``;
    ``client_id``/``client_secret`` a resource server configured for that
    tenant; ``resource`` this MCP server's URL, which must be the token's
    audience (``aud``, RFC 8707). ``issuer``, if given, must equal ``iss``.

    ``cache_seconds`` > 0 remembers an accepted token that long (never past
    its ``exp``), saving a round trip per request at the cost of seeing a
    revocation that much later. Refusals are never cached.
    ``http_client``: an ``httpx.AsyncClient`` to use, reusing its connections
    (close it yourself); without one, each introspection opens its own,
    through the proxy and trusting the CAs of ``egress`` (by default, the
    standard environment variables: upstream/egress.py; never ``.netrc``).
    """

    def __init__(self, introspection_url: str, client_id: str, client_secret: str, resource: str, *,
                 issuer: str | None = None, cache_seconds: float = 0.0, cache_size: int = 10_000,
                 timeout: float = 5.0, http_client: httpx.AsyncClient | None = None,
                 egress: Egress | None = None, clock: Callable[[], float] = time.time) -> None:
        expected = normalize_resource(resource)
        if expected is None:
            raise ValueError("resource must be an absolute URL")
        self.introspection_url = introspection_url
        self.client_id = client_id
        self._authorization = _basic(client_id, client_secret)
        self.resource = resource
        self._expected = expected
        self.issuer = issuer
        self.cache_seconds = cache_seconds
        self.cache_size = cache_size
        self.timeout = timeout
        self._http = http_client
        self._egress = egress or egress_from(None, None, os.environ)
        self._clock = clock
        # sha256(token) -> (answer, when it stops being used)
        self._cache: OrderedDict[str, tuple[AccessToken, float]] = OrderedDict()

    async def verify_token(self, token: str) -> AccessToken | None:
        """The token as the SDK's AccessToken; None if refused. Raises
        :class:`IntrospectionFailed` if no answer could be had."""
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(key)
        if cached is not None:
            if self._clock() < cached[1]:
                return cached[0]
            del self._cache[key]
        answer = await self._introspect(token)
        access = self._accept(token, answer)
        if access is not None and self.cache_seconds > 0:
            self._remember(key, access)
        return access

    async def _introspect(self, token: str) -> dict[str, Any]:
        headers = {"authorization": self._authorization, "accept": "application/json"}
        try:
            if self._http is not None:
                response = await self._http.post(self.introspection_url, data={"token": token},
                                                 headers=headers, timeout=self.timeout)
            else:
                transport = self._egress.async_transport(limits=httpx.Limits(max_connections=1))
                async with httpx.AsyncClient(transport=transport, timeout=self.timeout, follow_redirects=False,
                                             trust_env=False) as http:
                    response = await http.post(self.introspection_url, data={"token": token}, headers=headers)
        except httpx.HTTPError as exc:
            raise IntrospectionFailed(f"introspection request failed: {type(exc).__name__}") from None
        if response.status_code != 200:
            # 401: this resource server's credentials are wrong; a config error, not the client's.
            raise IntrospectionFailed(f"introspection answered HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            raise IntrospectionFailed("introspection answered something other than JSON") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("active"), bool):
            raise IntrospectionFailed("introspection answer has no boolean 'active'")
        return answer

    def _accept(self, token: str, answer: dict[str, Any]) -> AccessToken | None:
        if answer["active"] is not True:
            return None
        # A refresh token introspects as active too; it is no bearer credential.
        if str(answer.get("token_type", "")).lower() != "bearer":
            return None
        exp, client_id, aud = answer.get("exp"), answer.get("client_id"), answer.get("aud")
        if not isinstance(exp, int) or isinstance(exp, bool) or exp < int(self._clock()):
            return None
        if not isinstance(client_id, str) or not isinstance(aud, str):
            return None
        # Audience binding (RFC 8707): a token for another resource is refused here.
        if normalize_resource(aud) != self._expected:
            return None
        if self.issuer is not None and answer.get("iss") != self.issuer:
            return None
        scope = answer.get("scope")
        claims = {"iss": answer["iss"]} if isinstance(answer.get("iss"), str) else None
        return AccessToken(
            token=token,
            client_id=client_id,
            scopes=scope.split() if isinstance(scope, str) else [],
            expires_at=exp,
            resource=aud,
            subject=answer.get("sub") if isinstance(answer.get("sub"), str) else None,
            claims=claims,
        )

    def _remember(self, key: str, access: AccessToken) -> None:
        assert access.expires_at is not None
        # Good through its last whole second, as at the proxy.
        until = min(self._clock() + self.cache_seconds, access.expires_at + 1)
        self._cache[key] = (access, until)
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
