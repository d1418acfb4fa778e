"""Tenants kept in the database (servers, with their organization's OAuth
configuration as upstream) served beside the configuration file's: the
tenant directory's :class:`DatabaseTenants` source, and the conversions
between the database's records and the configuration's, so both are
checked by the same rules (config.py).

The file's tenants win: a server whose slug is a file tenant's, or that
would answer at a file tenant's place (a host and issuer or resource path
of one), is not served (and the CLI refuses to make one)."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import attrs

from . import config as config_mod
from .adapters.forward import Backend, backend_for
from .app import tenant, upstream_source
from .core.models import OAuthConfig, Server
from .core.store import Store
from .core.tenancy import Places, places
from .core.tenant import Policy
from .directory import Entry, Listed, entry_of
from .upstream.providers import UpstreamSource

log = logging.getLogger("mcp_oauth_proxy")

POLICY_FIELDS = tuple(f.name for f in attrs.fields(Policy))


def upstream_config(c: OAuthConfig) -> config_mod.UpstreamConfig:
    return config_mod.UpstreamConfig(
        kind=c.kind, client_id=c.client_id, client_secret=c.client_secret, issuer=c.issuer, domain=c.domain,
        authorization_endpoint=c.authorization_endpoint, token_endpoint=c.token_endpoint,
        userinfo_endpoint=c.userinfo_endpoint, scopes=None if c.scopes is None else list(c.scopes),
        user_id_claim=c.user_id_claim, token_auth_method=c.token_auth_method, pkce=c.pkce)


def tenant_config(s: Server, upstream: config_mod.UpstreamConfig | None = None) -> config_mod.TenantConfig:
    """The server as a file tenant would be written (its upstream: ``upstream``,
    else a placeholder, for checks that leave the upstream out)."""
    return config_mod.TenantConfig(
        slug=s.slug, issuer=s.issuer, resource=s.resource,
        upstream=upstream or config_mod.UpstreamConfig(kind="github", client_id="-", client_secret="-"),
        backend=s.backend, forward_upstream_token_header=s.forward_upstream_token_header,
        scopes=list(s.scopes), required_scopes=list(s.required_scopes), resource_name=s.resource_name,
        policy=Policy(**s.policy))


def oauth_config_problems(c: OAuthConfig) -> list[str]:
    return config_mod.upstream_problems(upstream_config(c), "oauth config")


def server_problems(s: Server, file_tenants: Sequence[Listed] = ()) -> list[str]:
    """The file's rules for a tenant, and the file's tenants' precedence."""
    unknown = sorted(set(s.policy) - set(POLICY_FIELDS))
    if unknown:
        return [f"server.policy: unknown key(s) {', '.join(unknown)} (known: {', '.join(POLICY_FIELDS)})"]
    problems = config_mod.tenant_problems(tenant_config(s), "server", upstream=False)
    clash = file_clash(s, [entry_of(e) for e in file_tenants])
    return problems + ([clash] if clash else [])


def _overlap(a: Places, b: Places) -> bool:
    return bool(a.hosts & b.hosts) and bool(set(a.prefixes) & set(b.prefixes))


def file_clash(s: Server, file_entries: Sequence[Entry]) -> str | None:
    """Why the server may not be served beside the file's tenants, if it may not."""
    try:
        mine = places(tenant(tenant_config(s)))
    except TypeError:  # an unknown policy key: not servable anyway
        return f"server {s.slug!r}: its policy names unknown keys"
    for e in file_entries:
        if e.tenant.slug == s.slug:
            return f"slug {s.slug!r} is a file-managed tenant's"
        if e.tenant.issuer == s.issuer or e.tenant.resource == s.resource or _overlap(mine, places(e.tenant)):
            return f"server {s.slug!r} would answer where file-managed tenant {e.tenant.slug!r} does"
    return None


@attrs.define
class DatabaseTenants:
    """The tenant directory's source (directory.TenantSource): the file's
    tenants, then the database's servers. ``version`` is the database's
    directory version (one row); ``load`` reads the servers with their
    OAuth configurations. A configuration unchanged since the last load
    keeps its upstream source object (its cached OIDC discovery), whatever
    else changed. ``backends``: the servers' backends, as last loaded."""

    store: Store
    file_tenants: Sequence[Listed] = ()
    _file: tuple[Entry, ...] = attrs.field(init=False)
    _sources: dict[OAuthConfig, UpstreamSource] = attrs.field(init=False, factory=dict)
    backends: dict[str, Backend] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self._file = tuple(entry_of(e) for e in self.file_tenants)

    def version(self) -> int:
        return int(self.store.directory_version())

    def load(self) -> tuple[int, Sequence[Listed]]:
        state = self.store.load_directory()
        configs = {(c.organization, c.name): c for c in state.oauth_configs}
        sources: dict[OAuthConfig, UpstreamSource] = {}
        backends: dict[str, Backend] = {}
        entries: list[Listed] = list(self._file)
        for s in state.servers:
            c = configs.get((s.organization, s.oauth_config))
            why = "its OAuth configuration is missing" if c is None else file_clash(s, self._file)
            if why is not None:
                log.warning("not serving server %r from the database: %s", s.slug, why)
                continue
            assert c is not None
            source = sources.get(c) or self._sources.get(c) or upstream_source(upstream_config(c), {})
            sources[c] = source
            entries.append(Entry(tenant(tenant_config(s, upstream_config(c))), source))
            if s.backend is not None:
                backends[s.slug] = backend_for(s.resource, s.backend, s.forward_upstream_token_header)
        self._sources = sources
        self.backends = backends
        return state.version, entries

    def backend(self, slug: str) -> Any:
        return self.backends.get(slug)
