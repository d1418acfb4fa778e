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
from collections.abc import Sequence
from typing import Any

import attrs

from . import config as config_mod
from .adapters.forward import Backend, backend_for
from .app import tenant, upstream_source
from .core.models import OAuthConfig, Server
from .core.store import Store
from .core.tenancy import RESERVED, Places, intrudes, places, reserved
from .core.tenant import Policy
from .directory import Entry, Listed, entry_of
from .upstream.providers import PublicOnly, UpstreamSource

log = logging.getLogger("mcp_oauth_proxy")

POLICY_FIELDS = tuple(f.name for f in attrs.fields(Policy))


def upstream_config(c: OAuthConfig) -> config_mod.UpstreamConfig:
    return config_mod.UpstreamConfig(
        kind=c.kind, client_id=c.client_id, client_secret=c.client_secret, issuer=c.issuer, domain=c.domain,
        authorization_endpoint=c.authorization_endpoint, token_endpoint=c.token_endpoint,
        userinfo_endpoint=c.userinfo_endpoint, scopes=None if c.scopes is None else list(c.scopes),
        user_id_claim=c.user_id_claim, token_auth_method=c.token_auth_method, pkce=c.pkce, tenant=c.tenant,
        user_pool_id=c.user_pool_id)


def tenant_config(s: Server, upstream: config_mod.UpstreamConfig | None = None) -> config_mod.TenantConfig:
    """The server as a file tenant would be written (its upstream: ``upstream``,
    else a placeholder, for checks that leave the upstream out)."""
    return config_mod.TenantConfig(
        slug=s.slug, issuer=s.issuer, resource=s.resource,
        upstream=upstream or config_mod.UpstreamConfig(kind="github", client_id="-", client_secret="-"),
        backend=s.backend, forward_upstream_token_header=s.forward_upstream_token_header,
        scopes=list(s.scopes), required_scopes=list(s.required_scopes), resource_name=s.resource_name,
        policy=Policy(**s.policy), id_jag_issuers=list(s.id_jag_issuers))


def oauth_config_problems(c: OAuthConfig) -> list[str]:
    if c.kind == config_mod.DEV:  # it checks where it runs: a file's tenant only
        return ["oauth config.kind: \"dev\" is for a configuration file's tenant on this machine"]
    return config_mod.upstream_problems(upstream_config(c), "oauth config")


def server_problems(s: Server, file_tenants: Sequence[Listed] = ()) -> list[str]:
    """The file's rules for a tenant, where a server may be placed, and the
    file's tenants' precedence."""
    unknown = sorted(set(s.policy) - set(POLICY_FIELDS))
    if unknown:
        return [f"server.policy: unknown key(s) {', '.join(unknown)} (known: {', '.join(POLICY_FIELDS)})"]
    problems = config_mod.tenant_problems(tenant_config(s), "server", upstream=False)
    if problems:
        return problems
    problems = place_problems(s)
    clash = file_clash(s, [entry_of(e) for e in file_tenants])
    return problems + ([clash] if clash else [])


def server_places(s: Server) -> Places | None:
    """Where the server would be served; None if its URLs do not say."""
    try:
        return places(tenant(tenant_config(s)))
    except (TypeError, ValueError):  # an unknown policy key, a URL that does not parse
        return None


def place_problems(s: Server) -> list[str]:
    """Paths a server of the database may not take: beneath the ones every
    tenant at a host's root answers at, and a resource at the host's root,
    which would take every request there."""
    mine = server_places(s)
    if mine is None:
        return ["server.issuer: the issuer and resource must be URLs it can be served at"]
    issuer_path, resource_path = mine.prefixes
    problems = [f"server.{name}: its path may not be {' or '.join(RESERVED)} or beneath them"
                for name, path in (("issuer", issuer_path), ("resource", resource_path)) if reserved(path)]
    if not resource_path:
        problems.append("server.resource: must have a path (like /mcp): at the host's root it would take "
                        "every request there")
    return problems


def file_clash(s: Server, file_entries: Sequence[Entry]) -> str | None:
    """Why the server may not be served beside the file's tenants, if it may
    not: it would take requests of one (beneath a file tenant at a host's
    root is allowed: routing gives each its own)."""
    mine = server_places(s)
    if mine is None:
        return f"server {s.slug!r}: its issuer or resource is not a URL it can be served at"
    for e in file_entries:
        if e.tenant.slug == s.slug:
            return f"slug {s.slug!r} is a file-managed tenant's"
        if intrudes(mine, places(e.tenant), beneath_root=True):
            return f"server {s.slug!r} would answer where file-managed tenant {e.tenant.slug!r} does"
    return None


def server_clash(s: Server, others: Sequence[Server]) -> Server | None:
    """The first other server of the database the server would take
    requests of (the same place, or one beneath or above it, on a shared host)."""
    mine = server_places(s)
    for other in others:
        if other.slug == s.slug:
            continue
        theirs = server_places(other)
        if mine is None or theirs is None or intrudes(mine, theirs):
            return other
    return None


def clashes(servers: Sequence[Server]) -> dict[str, Server]:
    """:func:`server_clash` of each server against all the others, by slug
    (those that clash with none left out), at a cost that grows with the
    servers rather than with their pairs: each one's places are parsed once,
    and its rivals are found by looking its paths up, not by comparing it
    with every other (a review's 400 servers took 10 s a reload, on every
    replica, after any change)."""
    placed = [server_places(s) for s in servers]
    unplaced = {i for i, p in enumerate(placed) if p is None}
    at: dict[tuple[str, str], set[int]] = {}  # (host, path): the servers with an issuer or resource there
    under: dict[tuple[str, str], set[int]] = {}  # (host, path): those there or beneath it
    for i, p in enumerate(placed):
        if p is None:
            continue
        for host in p.hosts:
            for prefix in p.prefixes:
                at.setdefault((host, prefix), set()).add(i)
                for above in _at_and_above(prefix):
                    under.setdefault((host, above), set()).add(i)
    found: dict[str, Server] = {}
    for i, s in enumerate(servers):
        mine = placed[i]
        if mine is None:
            rivals = set(range(len(servers)))
        else:
            rivals = set(unplaced)
            for host in mine.hosts:
                for prefix in mine.prefixes:
                    rivals |= under.get((host, prefix), set())
                    for above in _at_and_above(prefix):
                        rivals |= at.get((host, above), set())
        first = min((j for j in rivals if servers[j].slug != s.slug), default=None)
        if first is not None:
            found[s.slug] = servers[first]
    return found


def _at_and_above(path: str) -> list[str]:
    """The path and every path it lies beneath (tenancy.beneath), the root "" last."""
    return [path] + [path[:k] for k in range(len(path) - 1, 0, -1) if path[k] == "/"] + ([""] if path else [])


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
        why_not: dict[str, str] = {}
        for s in state.servers:
            c = configs.get((s.organization, s.oauth_config))
            why = "its OAuth configuration is missing" if c is None else file_clash(s, self._file)
            if why is not None:
                why_not[s.slug] = why
        servable = [s for s in state.servers if s.slug not in why_not]
        for slug, clash in clashes(servable).items():
            # Two changes that raced past each other's checks: neither is
            # served, rather than one taking the other's requests.
            why_not[slug] = f"it would answer where server {clash.slug!r} does"
        for s in state.servers:
            if s.slug in why_not:
                log.warning("not serving server %r from the database: %s", s.slug, why_not[s.slug])
                continue
            c = configs[(s.organization, s.oauth_config)]
            source = sources.get(c) or self._sources.get(c) or PublicOnly(upstream_source(upstream_config(c), {}),
                                                                                   c.organization)
            sources[c] = source
            served = attrs.evolve(tenant(tenant_config(s, upstream_config(c))), fetches_public_only=s.organization)
            entries.append(Entry(served, source))
            if s.backend is not None:
                backends[s.slug] = backend_for(s.resource, s.backend, s.forward_upstream_token_header)
        self._sources = sources
        self.backends = backends
        return state.version, entries

    def backend(self, slug: str) -> Any:
        return self.backends.get(slug)
