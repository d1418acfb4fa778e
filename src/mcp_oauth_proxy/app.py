"""From a checked configuration to a running ASGI app: the store, the key
ring, the tenants with their upstream presets, and the one app that answers
the OAuth endpoints and guards each tenant's resource."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from typing import Any

import attrs
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import machine_clients
from .adapters import probes
from .adapters.asgi import ASGIApp, BearerGuard, OAuthApp, Receive, Scope, Send, closing_on_shutdown, send_response
from .adapters.bodies import RequestBodies
from .adapters.forward import Forwarder, backend_for
from .adapters.site import Site
from .config import Config, ServerConfig, TenantConfig, UpstreamConfig, secret
from .core.flows import dev_login
from .core.models import Principal
from .core.store import Store, traits_of
from .core.tenant import ResourceServer, Tenant
from .directory import Directory, Entry, FixedTenants, TenantSource
from .storage.crypto import KeyRing
from .storage.keys import DEFAULT_KEY_FILE, load_or_create_keyring
from .storage.open import open_store
from .storage.token_cache import TokenCache
from .upstream import presets, providers
from .upstream.egress import egress_from

log = logging.getLogger("mcp_oauth_proxy")


def cookie_key(keyring: KeyRing) -> bytes:
    """The consent-cookie signing key, derived from the active storage key
    (RFC 5869), so every replica sharing the key ring agrees on it across
    restarts. Rotating the active key logs browsers out of remembered consents."""
    raw = keyring.raw_keys()[keyring.active]
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"mcp-oauth-proxy cookie key").derive(raw)


def _keyring(server: ServerConfig) -> KeyRing:
    if server.database.startswith("memory:"):
        return KeyRing.generate()  # nothing outlives the process anyway

    path = server.key_file or DEFAULT_KEY_FILE
    keyring, created = load_or_create_keyring(path)
    if created:
        log.warning("created a new key file %s (keep it: it decrypts the stored upstream tokens)", path)
    return keyring


def open_storage(server: ServerConfig, upgrade: bool = False) -> tuple[Store, KeyRing]:
    """(store, key ring); ``upgrade`` migrates an older schema instead of
    refusing it. What the store is (whether its calls block, …) is in its
    ``traits``."""
    keyring = _keyring(server)
    store = open_store(server.database, keyring, upgrade=upgrade, timeout=server.database_timeout)
    if server.token_cache_seconds > 0:
        store = TokenCache(store, server.token_cache_seconds)
    return store, keyring


def upstream_source(up: UpstreamConfig, environ: Mapping[str, str], issuer: str = "") -> providers.UpstreamSource:
    """The upstream's endpoints; ``issuer``: the tenant's (where the
    development identity provider answers, for kind "dev")."""
    if up.kind == "dev":
        return providers.oauth2(f"{issuer.rstrip('/')}/oauth/dev/authorize", f"{issuer.rstrip('/')}/oauth/dev/token",
                                dev_login.CLIENT_ID, "dev",
                                userinfo_endpoint=f"{issuer.rstrip('/')}/oauth/dev/userinfo", user_id_claim="sub")
    client_id = secret(up.client_id, up.client_id_env, environ)
    client_secret = secret(up.client_secret, up.client_secret_env, environ)
    if client_id is None or client_secret is None:
        missing = up.client_id_env if client_id is None else up.client_secret_env
        return providers.NotReady(f"environment variable {missing} is not set")
    options: dict[str, Any] = {"pkce": up.pkce}
    if up.scopes is not None:
        options["scopes"] = tuple(up.scopes)
    if up.kind == "github":
        endpoints = {k: getattr(up, k) for k in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint")}
        return providers.github(client_id, client_secret, **options, **endpoints)
    if up.kind == "ghes":
        assert up.domain
        return presets.github_enterprise(up.domain, client_id, client_secret, **options)
    if up.token_auth_method is not None:
        options["token_auth_method"] = up.token_auth_method
    if up.user_id_claim is not None:
        options["user_id_claim"] = up.user_id_claim
    if up.kind == "oauth2":
        assert up.authorization_endpoint and up.token_endpoint
        # With an issuer, its RFC 9207 iss in the callback is checked, not refused.
        return providers.oauth2(up.authorization_endpoint, up.token_endpoint, client_id, client_secret,
                                userinfo_endpoint=up.userinfo_endpoint, issuer=up.issuer, **options)
    if up.kind == "google":
        return providers.google(client_id, client_secret, **options)
    if up.kind == "auth0":
        assert up.domain
        return providers.auth0(up.domain, client_id, client_secret, **options)
    if up.kind == "entra":
        assert up.tenant
        return presets.entra(up.tenant, client_id, client_secret, cloud=up.domain or presets.ENTRA_CLOUDS[0],
                             **options)
    if up.kind == "okta":
        assert up.issuer
        return presets.okta(up.issuer, client_id, client_secret, **options)
    if up.kind == "keycloak":
        assert up.issuer
        return presets.keycloak(up.issuer, client_id, client_secret, **options)
    if up.kind == "gitlab":
        return presets.gitlab(client_id, client_secret, issuer=up.issuer, **options)
    if up.kind == "cognito":
        assert up.user_pool_id
        return presets.cognito(up.user_pool_id, client_id, client_secret, **options)
    if up.kind == "slack":
        return presets.slack(client_id, client_secret, **options)
    if up.kind == "discord":
        return presets.discord(client_id, client_secret, **options)
    assert up.kind == "oidc" and up.issuer
    return providers.oidc(up.issuer, client_id, client_secret, **options)


def tenant(t: TenantConfig) -> Tenant:
    """The core's Tenant; its upstream is resolved when a flow asks for it
    (ResolveUpstream), from the source the tenant directory keeps with it."""
    return Tenant(
        slug=t.slug,
        issuer=t.issuer,
        resource=t.resource,
        scopes=tuple(t.scopes),
        required_scopes=tuple(t.required_scopes),
        policy=t.policy,
        resource_servers=tuple(ResourceServer(r.client_id, r.secret_sha256) for r in t.resource_servers),
        resource_name=t.resource_name,
        client_metadata_documents=t.client_metadata_documents,
        client_metadata_allow_loopback=t.client_metadata_allow_loopback,
        rate_limits=t.rate_limits,
        dev_login=t.upstream.kind == "dev",
        machine_clients=tuple(machine_clients.declared(t.slug, c) for c in t.machine_clients),
        id_jag_issuers=tuple(t.id_jag_issuers),
    )


def config_entries(config: Config, environ: Mapping[str, str]) -> tuple[Entry, ...]:
    """The configuration file's tenants with their upstream sources."""
    return tuple(Entry(tenant(t), upstream_source(t.upstream, environ, t.issuer)) for t in config.tenants)


def config_tenants(config: Config, environ: Mapping[str, str]) -> FixedTenants:
    """The configuration file's tenants with their upstream sources: what
    the tenant directory serves."""
    return FixedTenants(config_entries(config, environ))


def tenant_source(config: Config, store: Store, environ: Mapping[str, str]) -> TenantSource:
    """The configuration file's tenants; with a database other processes
    share (where the CLI adds servers), its servers beside them
    (tenants_db.DatabaseTenants, reloaded by housekeeping.follow_directory)."""
    fixed = config_tenants(config, environ)
    if not traits_of(store).shared:
        return fixed
    from .tenants_db import DatabaseTenants

    return DatabaseTenants(store, fixed.tenants)


def build_site(config: Config, environ: Mapping[str, str] | None = None, upgrade: bool = False) -> Site:
    environ = os.environ if environ is None else environ
    # Before the store: a proxy or CA setting that cannot work stops the start.
    egress = egress_from(config.server.outbound_proxy, config.server.ca_bundle, environ,
                         config.server.organization_upstream_networks)
    store, keyring = open_storage(config.server, upgrade)
    return Site(Directory(tenant_source(config, store, environ)), store, cookie_key(keyring),
                trusted_proxies=config.server.trusted_proxies, max_body=config.server.max_body,
                audit_retention=config.server.audit_retention_days * 86400, egress=egress)


@attrs.define
class ServerApp:
    """The standalone server: each tenant's resource path goes through the
    guard to the backend (by default the :class:`Forwarder`, which sends it
    to the tenant's ``backend`` URL, or answers 404 for a tenant without
    one); every other path is an OAuth endpoint. Every request body, read
    or not, goes through :class:`RequestBodies` (``body_timeout`` seconds)."""

    site: Site
    oauth: OAuthApp
    guarded: BearerGuard
    body_timeout: float | None = None
    # Each of the two, its request bodies seen to (one layer less per request
    # than one RequestBodies around the routing); and the backend's, for a
    # request the guard's remembered verdict lets in.
    _guarded_bodies: RequestBodies = attrs.field(init=False)
    _oauth_bodies: RequestBodies = attrs.field(init=False)
    _backend_bodies: RequestBodies = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._guarded_bodies = RequestBodies(self.guarded, self.body_timeout)
        self._oauth_bodies = RequestBodies(self.oauth, self.body_timeout)
        self._backend_bodies = RequestBodies(self.guarded.app, self.body_timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            # The hot path: a request the guard has a verdict for goes
            # where that verdict sends it, without routing.
            head, verdict = self.guarded.recall(scope)
            if verdict is not None:
                assert head is not None  # a verdict is recalled by what was read of the head
                if isinstance(verdict.answer, Principal):
                    app = self._backend_bodies if head.may_have_body else self.guarded.app
                    return await app(self.guarded.let_in(verdict, scope), receive, send)
                if not head.may_have_body:  # else its body is seen to below
                    return await self.guarded.refuse(verdict, send)
        elif kind == "lifespan":
            return await self._lifespan(scope, receive, send)
        path = scope.get("path", "")
        if path in probes.PATHS and scope["type"] == "http" and scope.get("method") in ("GET", "HEAD"):
            return await send_response(send, await self.oauth.probe(path))
        # The tenants' protected paths, as the directory's current snapshot has them.
        for resource_path in self.site.directory.current.resource_paths:
            if path == resource_path or path.startswith(resource_path + "/"):
                return await self._guarded_bodies(scope, receive, send)
        return await self._oauth_bodies(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The backend owns the lifespan (the guard passes it on); our pools
        # close on its shutdown.
        await self.guarded(scope, closing_on_shutdown(receive, self.oauth.aclose), send)


def forwarder(config: Config, site: Site) -> Forwarder:
    """Forwarding to each tenant's ``backend`` (tenants without one get a 404),
    the file's and the database's servers' alike."""
    return Forwarder(site, {t.slug: backend_for(t.resource, t.backend, t.forward_upstream_token_header)
                            for t in config.tenants if t.backend is not None},
                     max_body=config.server.max_forward_body, per_person=config.server.max_forward_per_person,
                     more=getattr(site.directory.source, "backend", None),
                     ssl_context=site.egress.ssl_context)


def build_app(config: Config, environ: Mapping[str, str] | None = None, backend: ASGIApp | None = None,
              upgrade: bool = False) -> ServerApp:
    """The served app; ``backend`` replaces forwarding (an app embedded in-process)."""
    site = build_site(config, environ, upgrade)
    timeout = config.server.upstream_timeout
    if backend is None:
        backend = forwarder(config, site)
    oauth = OAuthApp(site, upstream_timeout=timeout)
    # ServerApp sends a path some tenant protects to the guard, whatever the
    # host: what the tenant of that host does not protect goes back to OAuth.
    return ServerApp(site, oauth, BearerGuard(backend, site, upstream_timeout=timeout, elsewhere=oauth),
                     body_timeout=config.server.body_timeout)


def build_admin_app(config: Config, site: Site, environ: Mapping[str, str] | None = None) -> Any:
    """The admin listener's app (server.admin_listen) on the site's store."""
    from .admin.api import AdminApi
    from .admin.asgi import AdminApp
    from .admin.console import Console
    from .admin.console_session import console_key
    from .admin.discovery_check import bounded_fetch, check_discovery
    from .admin.operations import Management

    file = config_entries(config, os.environ if environ is None else environ)
    management = Management(site.store, file, audit_retention=config.server.audit_retention_days * 86400,
                            organization_backends=config.server.organization_backends,
                            max_servers_per_organization=config.server.max_servers_per_organization)
    check = functools.partial(check_discovery, fetch=functools.partial(bounded_fetch, egress=site.egress))
    return AdminApp(AdminApi(management), site, Console(management, console_key(site.cookie_key), check),
                    max_body=config.server.max_body)
