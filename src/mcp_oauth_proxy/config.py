"""The TOML configuration: parsed with tomllib, structured with cattrs into
attrs classes, then checked; every problem is reported once, naming its key
(``tenants[0].upstream.client_id: missing``)."""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, get_origin
from urllib.parse import urlsplit

import attrs
import cattrs
from cattrs.cols import list_structure_factory
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from . import machine_clients
from .adapters.forward_headers import canonical, forwarder_reserves
from .admin.backends import allowed_entry_problem, written_as_uri
from .core.tenant import COUNTS, MAX_CONSENT_TTL, Policy, RateLimit, RateLimits
from .upstream.egress import EgressError, egress_from
from .upstream.presets import ENTRA_CLOUDS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KINDS = ("oidc", "github", "google", "auth0", "oauth2", "entra", "okta", "keycloak", "gitlab", "cognito", "discord",
         "slack", "ghes", "dev")
# The development identity provider: a configuration file's tenant, on this
# machine only (flows/dev_login.py).
DEV = "dev"
TOKEN_AUTH_METHODS = ("client_secret_post", "client_secret_basic")
_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A field name is a token (RFC 9110 §5.1, §5.6.2).
_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Headers the forwarder passes on from the client untouched (MCP's among
# them); those it sets or strips are forward_headers.forwarder_reserves'.
_PASSED_ON_FIELDS = ("cookie", "content-type", "content-encoding", "accept", "accept-encoding", "mcp-session-id",
                     "mcp-protocol-version", "last-event-id")


class ConfigError(Exception):
    """The configuration is not usable; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@attrs.frozen
class UpstreamConfig:
    kind: str
    client_id: str | None = None
    client_id_env: str | None = None
    client_secret: str | None = attrs.field(default=None, repr=False)
    client_secret_env: str | None = None
    # oidc, okta, keycloak (and gitlab, self-managed): the issuer to discover;
    # auth0: the tenant's domain; ghes: the server's host; entra: a national
    # cloud's sign-in host (presets.ENTRA_CLOUDS; the global one by default).
    issuer: str | None = None
    domain: str | None = None
    # entra: the directory (tenant) id, or common / organizations.
    tenant: str | None = None
    # cognito: the user pool's id, its region first (eu-west-1_AbC123).
    user_pool_id: str | None = None
    # oauth2 (and overrides for github): explicit endpoints.
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    userinfo_endpoint: str | None = None
    scopes: list[str] | None = None
    user_id_claim: str | None = None
    token_auth_method: str | None = None
    pkce: bool = True


@attrs.frozen
class ResourceServerConfig:
    client_id: str
    secret_sha256: str = attrs.field(repr=False)


@attrs.frozen
class MachineClientConfig:
    """A client without a browser (machine_clients.py): by its secret's
    SHA-256 (hex), or by private_key_jwt with its public keys (``jwks``, a
    JWK Set as JSON text, or ``jwks_uri``)."""

    client_id: str
    grant_types: list[str] = attrs.field(factory=lambda: ["client_credentials"])
    token_endpoint_auth_method: str = "client_secret_basic"
    secret_sha256: str | None = attrs.field(default=None, repr=False)
    jwks: str | None = None
    jwks_uri: str | None = None
    scope: str | None = None
    client_name: str | None = None


@attrs.frozen
class TenantConfig:
    slug: str
    issuer: str
    resource: str
    upstream: UpstreamConfig
    backend: str | None = None
    # Opt-in: the header that carries the person's fresh upstream access token to ``backend``.
    forward_upstream_token_header: str | None = None
    scopes: list[str] = attrs.field(factory=lambda: ["mcp"])
    required_scopes: list[str] = attrs.field(factory=list)
    resource_name: str | None = None
    client_metadata_documents: bool = True
    client_metadata_allow_loopback: bool = False
    policy: Policy = Policy()
    # Requests per window on token, register, authorize, callback, revoke
    # and introspect (README: Rate limits); counted in the database, so
    # replicas sharing it share the limits.
    rate_limits: RateLimits = RateLimits()
    resource_servers: list[ResourceServerConfig] = attrs.field(factory=list)
    machine_clients: list[MachineClientConfig] = attrs.field(factory=list)
    # Issuers of ID-JAGs (SEP-990) the jwt-bearer grant accepts; "upstream":
    # this tenant's upstream identity provider.
    id_jag_issuers: list[str] = attrs.field(factory=list)


@attrs.frozen
class ServerConfig:
    listen: str = "127.0.0.1:8000"
    database: str = "memory://"
    trusted_proxies: list[str] = attrs.field(factory=list)
    key_file: str | None = None
    # Seconds for each phase of a request to an upstream.
    upstream_timeout: float = 10.0
    # Seconds an idle connection is kept, and the most a client has to send
    # a request's head (from its connection or the last answer on it).
    # Longer than clients keep an idle connection (httpx: 5 s), or a request
    # sent as the server closes it fails with "server disconnected".
    keep_alive_timeout: float = 20.0
    # Seconds a client may keep the server waiting for a request's body.
    body_timeout: float = 30.0
    # Seconds a client may leave an answer unread (the server's send buffer
    # full) before its connection is closed.
    send_timeout: float = 30.0
    # Seconds to connect to the database and to run one statement there;
    # past them the request gets a 503 (SQLite: how long to wait for its lock).
    database_timeout: float = 5.0
    # Largest request body accepted at the OAuth endpoints (bytes).
    max_body: int = 1024 * 1024
    # Largest request body forwarded to a tenant's backend (bytes).
    max_forward_body: int = 10 * 1024 * 1024
    # Requests of one person (or machine client) forwarded at once, event
    # streams included: one token cannot take every backend connection.
    max_forward_per_person: int = 32
    # Connections held at once from one address (an IPv6 /64; the trusted
    # proxies' are not counted), and in all (0: half the process's limit on
    # open files, less a reserve); past them a new connection is closed as
    # soon as it is accepted (connection_caps.py). 0 per address: no cap.
    max_connections_per_address: int = 256
    max_connections: int = 0
    # Seconds between removals of expired records (0: never; `db gc` does it
    # by hand), and how many of each kind one batch removes.
    gc_interval: int = 300
    gc_batch: int = 1000
    # Seconds a found access token is remembered by the guard of one process.
    # Revocation through this process is exact; other replicas sharing the
    # database forget it within about a second (housekeeping.follow_revocations).
    # 0: always ask the database.
    token_cache_seconds: float = 5.0
    # The admin API's own address (HOST:PORT), apart from the public one;
    # unset: no admin surface is served at all.
    admin_listen: str | None = None
    # Days the audit log's events are kept in the database.
    audit_retention_days: int = 90
    # One line per request (query values as their lengths: nothing secret).
    access_log: bool = False
    # Every outbound request (upstream, JWKS, metadata documents, the console's
    # check) goes through this http:// proxy; unset: HTTPS_PROXY and
    # http_proxy (lower case only), if set. NO_PROXY applies either way
    # (upstream/egress.py). Its URL may hold a password: kept out of reprs.
    outbound_proxy: str | None = attrs.field(default=None, repr=False)
    # A PEM file of CAs trusted besides the default ones (a private CA's).
    ca_bundle: str | None = None
    # By organization, the URLs its admin token may name its servers'
    # backends beneath (same scheme, host and port; the path or beneath it);
    # an organization not named: only a global admin token, the CLI or this
    # file names its servers' backends.
    organization_backends: dict[str, list[str]] = attrs.field(factory=dict)
    # What an organization's OAuth configuration (its issuer, its endpoints,
    # found by discovery or written) may reach besides public addresses:
    # networks (10.20.0.0/16) or addresses, a list for every organization or
    # a table by organization; none by default, so that whoever writes one
    # cannot reach this network through it (upstream/egress.py).
    organization_upstream_networks: list[str] | dict[str, list[str]] = attrs.field(factory=list)
    # Servers one organization may keep in the database (0: no cap). Every
    # replica reloads them all after any change: a few thousand cost each
    # reload a fraction of a second.
    max_servers_per_organization: int = 100


@attrs.frozen
class Config:
    # The file's tenants; with a database, servers made by the CLI join them
    # (tenants_db.py), so a file may declare none.
    tenants: list[TenantConfig] = attrs.field(factory=list)
    server: ServerConfig = attrs.field(factory=ServerConfig)


# -- structuring: strict types, no silent conversions -------------------------


class _Bad(ValueError):
    """A value of the wrong type; its message is shown as it is."""


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _strict(kind: type) -> Callable[[Any, type], Any]:
    def structure(value: Any, _: type) -> Any:
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not ok:
            raise _Bad(f"must be {_TYPE_NAMES[kind]}")
        return value

    return structure


def _converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    for kind in _TYPE_NAMES:
        converter.register_structure_hook(kind, _strict(kind))

    def list_factory(type_: Any) -> Callable[[Any, Any], Any]:
        inner = list_structure_factory(type_, converter)

        def structure(value: Any, t: Any) -> Any:
            if not isinstance(value, list):
                raise _Bad("must be a list")
            return inner(value, t)

        return structure

    def is_list(t: Any) -> bool:
        return get_origin(t) is list

    converter.register_structure_hook_factory(is_list, list_factory)

    # A list of networks for every organization, or a table of them by organization.
    def networks(value: Any, _: Any) -> Any:
        if isinstance(value, dict):
            return converter.structure(value, dict[str, list[str]])
        if isinstance(value, list):
            return converter.structure(value, list[str])
        raise _Bad("must be a list of networks, or a table of them by organization")

    converter.register_structure_hook(list[str] | dict[str, list[str]], networks)

    def table(cls: type) -> Callable[[Any, type], Any]:
        inner: Callable[[Mapping[str, Any], Any], Any] = converter.gen_structure_attrs_fromdict(cls)

        def structure(value: Any, t: type) -> Any:
            if not isinstance(value, dict):
                raise _Bad("must be a table")
            return inner(value, t)

        return structure

    # Leaves first: a class's structure function binds its fields' hooks when made.
    for cls in (Policy, ResourceServerConfig, MachineClientConfig, UpstreamConfig, TenantConfig, ServerConfig, Config):
        converter.register_structure_hook(cls, table(cls))
    return converter


def _format(exc: BaseException, _: type | None) -> str:
    if isinstance(exc, KeyError):
        return "missing"
    if isinstance(exc, ForbiddenExtraKeysError):
        return "unknown key(s): " + ", ".join(sorted(exc.extra_fields))
    if isinstance(exc, _Bad):
        return str(exc)
    return "invalid value"


def _structure_problems(exc: Exception) -> list[str]:
    problems = []
    for line in cattrs.transform_error(exc, path="$", format_exception=_format):
        message, _, where = line.rpartition(" @ ")
        where = where.removeprefix("$").removeprefix(".")
        if message.startswith("unknown key(s): "):
            keys = message.removeprefix("unknown key(s): ").split(", ")
            problems += [f"{where + '.' if where else ''}{key}: unknown key" for key in keys]
        else:
            problems.append(f"{where or '(top level)'}: {message}")
    return problems


# -- checks beyond types ----------------------------------------------------------


def _url(value: str, where: str, problems: list[str], *, path_ok: bool = True, user_info_ok: bool = True) -> None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - a port that is not a number, or out of range, raises here
    except ValueError:
        problems.append(f"{where}: must be an http or https URL")
        return
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(f"{where}: must be an http or https URL")
    elif parts.query or parts.fragment or "#" in value:
        problems.append(f"{where}: must not have a query or fragment")
    elif not path_ok and parts.path not in ("", "/"):
        problems.append(f"{where}: must not have a path")
    elif not user_info_ok and "@" in parts.netloc:
        # RFC 9110 §4.2.4: user info in an http(s) URI is an error.
        problems.append(f"{where}: must not have user info")


def _check_upstream(up: UpstreamConfig, where: str, problems: list[str]) -> None:
    if up.kind not in KINDS:
        problems.append(f"{where}.kind: must be one of {', '.join(KINDS)}")
        return
    if up.kind == DEV:
        given = [k for k in ("client_id", "client_secret", "client_id_env", "client_secret_env", "issuer", "domain",
                             "tenant", "user_pool_id", "authorization_endpoint", "token_endpoint", "userinfo_endpoint")
                 if getattr(up, k) is not None]
        if given:
            problems.append(f"{where}: kind = \"dev\" is built in and takes no {', '.join(given)}")
        return
    for name in ("client_id", "client_secret"):
        given, env = getattr(up, name), getattr(up, name + "_env")
        if given is not None and env is not None:
            problems.append(f"{where}.{name}: give {name} or {name}_env, not both")
        elif given is None and env is None:
            problems.append(f"{where}.{name}: missing (or set {name}_env)")
        elif env is not None and not _ENV_NAME.fullmatch(env):
            problems.append(f"{where}.{name}_env: must be an environment variable name")
    for key in _NEEDED.get(up.kind, ()):
        if getattr(up, key) is None:
            hint = _HINTS.get((up.kind, key))
            problems.append(f"{where}.{key}: missing (required for kind = \"{up.kind}\"{': ' + hint if hint else ''})")
    for key, kind in (("tenant", "entra"), ("user_pool_id", "cognito")):
        if getattr(up, key) is not None and up.kind != kind:
            problems.append(f"{where}.{key}: only for kind = \"{kind}\"")
    _check_preset(up, where, problems)
    for key in ("issuer", "authorization_endpoint", "token_endpoint", "userinfo_endpoint"):
        if getattr(up, key) is not None:
            _url(getattr(up, key), f"{where}.{key}", problems)
    if up.domain is not None and not re.fullmatch(r"[A-Za-z0-9.-]+(:\d+)?", up.domain):
        problems.append(f"{where}.domain: must be a host name, like example.eu.auth0.com")
    if up.token_auth_method is not None and up.token_auth_method not in TOKEN_AUTH_METHODS:
        problems.append(f"{where}.token_auth_method: must be one of {', '.join(TOKEN_AUTH_METHODS)}")


# Each kind's required settings, and what they are.
_NEEDED = {"oidc": ("issuer",), "auth0": ("domain",), "oauth2": ("authorization_endpoint", "token_endpoint"),
           "entra": ("tenant",), "okta": ("issuer",), "keycloak": ("issuer",), "cognito": ("user_pool_id",),
           "ghes": ("domain",)}
_HINTS = {
    ("entra", "tenant"): "the directory (tenant) id, common or organizations",
    ("okta", "issuer"): "https://ORG.okta.com, or a custom authorization server's https://ORG.okta.com/oauth2/ID",
    ("keycloak", "issuer"): "the realm's URL, like https://keycloak.example/realms/acme",
    ("cognito", "user_pool_id"): "the user pool's id, like eu-west-1_AbC123",
    ("ghes", "domain"): "the server's host name, like github.acme.example",
}
# As Entra writes it in its issuers: lower case.
_TENANT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_USER_POOL_ID = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]_[0-9A-Za-z]+")


# Claims a person (or another tenant's admin) can set to anything, so to
# someone else's: never the stable id a grant belongs to ("nOAuth").
_MUTABLE_CLAIMS = frozenset({"email", "preferred_username", "upn", "unique_name", "name", "nickname", "given_name",
                             "family_name", "login", "username"})


def _check_preset(up: UpstreamConfig, where: str, problems: list[str]) -> None:
    """The shapes a named provider's settings take."""
    chosen = set((up.user_id_claim or "").split("+")) & _MUTABLE_CLAIMS
    # A named provider's stable id is known; with a generic one the operator
    # decides (warnings() says it).
    if chosen and up.kind not in ("github", "oidc", "oauth2"):
        problems.append(f"{where}.user_id_claim: {', '.join(sorted(chosen))} can be changed by the person, so "
                        "made someone else's: use the provider's stable id (the default)")
    if up.tenant is not None and up.tenant not in ("common", "organizations") and not _TENANT_ID.fullmatch(up.tenant):
        problems.append(f"{where}.tenant: must be the directory (tenant) id (a GUID, in lower case), "
                        "common or organizations")
    if up.kind == "entra" and up.domain is not None and up.domain not in ENTRA_CLOUDS:
        problems.append(f"{where}.domain: for entra, the cloud's sign-in host: {', '.join(ENTRA_CLOUDS[:-1])} or "
                        f"{ENTRA_CLOUDS[-1]}")
    if up.user_pool_id is not None and not _USER_POOL_ID.fullmatch(up.user_pool_id):
        problems.append(f"{where}.user_pool_id: must be a user pool id, its region first, like eu-west-1_AbC123")
    try:
        path = urlsplit(up.issuer).path.rstrip("/") if up.issuer is not None else ""
    except ValueError:
        return  # not a URL at all: _url says so
    shaped = {"okta": r"(/oauth2/[A-Za-z0-9]+)?", "keycloak": r"(/[^/]+)*/realms/[^/]+"}.get(up.kind)
    if shaped and up.issuer is not None and up.issuer.endswith("/") and re.fullmatch(shaped, path):
        # Discovery needs the issuer exactly as the provider writes it (OIDC
        # Discovery §4.3), and these write none.
        problems.append(f"{where}.issuer: without a trailing slash, as {up.kind} writes its issuer")
    if up.kind == "okta" and up.issuer is not None and not re.fullmatch(r"(/oauth2/[A-Za-z0-9]+)?", path):
        problems.append(f"{where}.issuer: must be the org's URL or a custom authorization server's "
                        "(…/oauth2/default, …/oauth2/ID)")
    if up.kind == "keycloak" and up.issuer is not None and not re.fullmatch(r"(/[^/]+)*/realms/[^/]+", path):
        problems.append(f"{where}.issuer: must be a realm's URL, like https://keycloak.example/realms/acme")


def _check_tenant(t: TenantConfig, where: str, problems: list[str], upstream: bool = True) -> None:
    if not _SLUG.fullmatch(t.slug):
        problems.append(f"{where}.slug: must be 1-63 characters of a-z 0-9 _ - (starting with a letter or digit)")
    # A resource with user info would match no resource a client names (core/scopes.py).
    _url(t.issuer, f"{where}.issuer", problems, user_info_ok=False)
    _url(t.resource, f"{where}.resource", problems, user_info_ok=False)
    if t.backend is not None:
        _url(t.backend, f"{where}.backend", problems)
        if not written_as_uri(t.backend):
            problems.append(f"{where}.backend: must be written as a URI: ASCII, no spaces (RFC 3986 §2)")
    header = t.forward_upstream_token_header
    if header is not None:
        key = f"{where}.forward_upstream_token_header"
        if t.backend is None:
            problems.append(f"{key}: needs backend (it is a header of the forwarded requests)")
        if not _FIELD_NAME.fullmatch(header):
            problems.append(f"{key}: must be an HTTP header name, like X-Upstream-Token")
        # Compared as the backends compare names ("_" read as "-" by WSGI and CGI).
        elif canonical(header.encode()).decode() in _PASSED_ON_FIELDS or forwarder_reserves(header.encode()):
            problems.append(f"{key}: {header} is a header the forwarder sets or passes on; name another")
    if not t.scopes:
        problems.append(f"{where}.scopes: must name at least one scope")
    for scope in t.scopes:
        if not _SCOPE_TOKEN.fullmatch(scope):
            problems.append(f"{where}.scopes: {scope!r} is not a scope name (RFC 6749 §3.3: printable ASCII, "
                            "no space, quote or backslash)")
    for scope in t.required_scopes:
        if scope not in t.scopes:
            problems.append(f"{where}.required_scopes: {scope!r} is not in scopes")
    for field in attrs.fields(Policy):
        if getattr(t.policy, field.name) < 0:
            problems.append(f"{where}.policy.{field.name}: must not be negative")
    for name in ("access_token_ttl", "refresh_token_ttl", "code_ttl", "session_ttl"):
        if getattr(t.policy, name) == 0:
            problems.append(f"{where}.policy.{name}: must be positive")
    if t.policy.consent_ttl > MAX_CONSENT_TTL:
        problems.append(f"{where}.policy.consent_ttl: at most {MAX_CONSENT_TTL} seconds (366 days)")
    for endpoint in attrs.fields(RateLimits):
        limit: RateLimit = getattr(t.rate_limits, endpoint.name)
        key = f"{where}.rate_limits.{endpoint.name}"
        counts = COUNTS[endpoint.name]
        if min(limit.per_address, limit.per_client, limit.per_grant) < 0:
            problems.append(f"{key}: counts must not be negative (0 turns a count off)")
        if limit.window <= 0:
            problems.append(f"{key}.window: must be positive")
        for count in ("per_client", "per_grant"):
            if getattr(limit, count) and count not in counts:
                kept = " and ".join(c.removeprefix("per_") for c in counts)
                problems.append(f"{key}.{count}: {endpoint.name} is counted per {kept} only")
    _check_machine_clients(t, where, problems)
    _check_id_jag_issuers(t, where, problems, upstream)
    if upstream:
        _check_upstream(t.upstream, f"{where}.upstream", problems)


_SHA256 = re.compile(r"[0-9a-f]{64}")
# Upstream kinds that have an issuer to sign ID-JAGs as (oauth2: if given one).
_ISSUING_KINDS = ("oidc", "google", "auth0", "okta", "keycloak", "gitlab", "cognito", "entra", "slack")
# The presets naming people by more than sub (upstream/presets.py); an ID-JAG names them by its sub.
_USER_ID_CLAIMS = {"entra": "tid+oid", "slack": "https://slack.com/team_id+sub"}


def _check_machine_clients(t: TenantConfig, where: str, problems: list[str]) -> None:
    seen: set[str] = set()
    for i, c in enumerate(t.machine_clients):
        key = f"{where}.machine_clients[{i}]"
        if not c.client_id or c.client_id.startswith("https://") or len(c.client_id) > 255 or any(
                ord(ch) < 0x21 or ord(ch) == 0x7F for ch in c.client_id):
            problems.append(f"{key}.client_id: 1-255 visible characters, not an https URL (a metadata document's)")
        elif c.client_id in seen:
            problems.append(f"{key}.client_id: {c.client_id!r} is declared twice")
        seen.add(c.client_id)
        if c.secret_sha256 is not None and not _SHA256.fullmatch(c.secret_sha256):
            problems.append(f"{key}.secret_sha256: must be the secret's SHA-256, 64 lower-case hex digits")
        jwks = None if c.jwks is None else machine_clients.parsed_jwks(c.jwks)
        if c.jwks is not None and jwks is None:
            problems.append(f"{key}.jwks: must be a JWK Set as JSON")
            continue
        found = machine_clients.problems(c.token_endpoint_auth_method, c.grant_types,
                                         has_secret=c.secret_sha256 is not None, jwks=jwks, jwks_uri=c.jwks_uri,
                                         scope=c.scope, offered=tuple(t.scopes))
        for field, detail in found.items():
            problems.append(f"{key}.{'secret_sha256' if field == 'secret' else field}: {detail}")
        if c.token_endpoint_auth_method == "private_key_jwt" and c.secret_sha256 is not None:
            problems.append(f"{key}.secret_sha256: a private_key_jwt client has no secret")


def _check_id_jag_issuers(t: TenantConfig, where: str, problems: list[str], upstream: bool) -> None:
    for i, issuer in enumerate(t.id_jag_issuers):
        key = f"{where}.id_jag_issuers[{i}]"
        if issuer == "upstream":
            up = t.upstream
            if upstream and up.kind not in _ISSUING_KINDS and not (up.kind == "oauth2" and up.issuer):
                problems.append(f"{key}: the upstream ({up.kind}) has no issuer to sign ID-JAGs as")
            elif upstream and up.kind == "entra" and up.tenant in ("common", "organizations"):
                problems.append(f"{key}: a multi-tenant Entra upstream ({up.tenant}) has no one issuer to trust")
            elif upstream and (claim := up.user_id_claim or _USER_ID_CLAIMS.get(up.kind, "sub")) != "sub":
                problems.append(f"{key}: the upstream names people by {claim}, an ID-JAG by its sub; "
                                "the two would not be the same person")
        else:
            _url(issuer, key, problems)


def upstream_problems(up: UpstreamConfig, where: str) -> list[str]:
    """What is wrong with an upstream's settings (a tenant's in the file, or
    an OAuth configuration in the database): the file's rules, one place."""
    problems: list[str] = []
    _check_upstream(up, where, problems)
    return problems


def tenant_problems(t: TenantConfig, where: str, upstream: bool = True) -> list[str]:
    """What is wrong with a tenant's settings (the file's rules); its
    upstream's too, unless ``upstream`` is False (checked on its own)."""
    problems: list[str] = []
    _check_tenant(t, where, problems, upstream)
    return problems


def _check_server(s: ServerConfig, problems: list[str]) -> None:
    for name in ("listen", "admin_listen"):
        address = getattr(s, name)
        if address is None:
            continue
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            problems.append(f"server.{name}: must be HOST:PORT, like 127.0.0.1:8000")
    if s.admin_listen is not None and s.admin_listen == s.listen:
        problems.append("server.admin_listen: must be another address than server.listen")
    if s.audit_retention_days <= 0:
        problems.append("server.audit_retention_days: must be positive")
    if not s.database.startswith(("memory:", "sqlite:", "postgresql", "mysql", "mariadb")):
        problems.append("server.database: must be memory://, sqlite:///FILE or a PostgreSQL/MySQL URL")
    for organization, allowed in s.organization_backends.items():
        for i, entry in enumerate(allowed):
            problem = allowed_entry_problem(entry)
            if problem is not None:
                problems.append(f"server.organization_backends.{organization}[{i}]: {problem}")
    for i, entry in enumerate(s.trusted_proxies):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            problems.append(f"server.trusted_proxies[{i}]: must be an IP address or network")
    for name in ("upstream_timeout", "keep_alive_timeout", "body_timeout", "send_timeout", "database_timeout"):
        if getattr(s, name) <= 0:
            problems.append(f"server.{name}: must be positive")
    if s.max_body <= 0:
        problems.append("server.max_body: must be positive")
    if s.max_forward_body <= 0:
        problems.append("server.max_forward_body: must be positive")
    if s.max_forward_per_person <= 0:
        problems.append("server.max_forward_per_person: must be positive")
    for name in ("max_connections_per_address", "max_connections", "max_servers_per_organization"):
        if getattr(s, name) < 0:
            problems.append(f"server.{name}: must not be negative (0: no cap of yours)")
    if s.gc_interval < 0:
        problems.append("server.gc_interval: must not be negative (0 turns it off)")
    if s.gc_batch <= 0:
        problems.append("server.gc_batch: must be positive")
    if s.token_cache_seconds < 0:
        problems.append("server.token_cache_seconds: must not be negative (0 turns it off)")
    try:
        egress_from(s.outbound_proxy, s.ca_bundle, {}, s.organization_upstream_networks)
    except EgressError as exc:
        problems.append(str(exc))


def check(config: Config) -> list[str]:
    problems: list[str] = []
    _check_server(config.server, problems)
    if not config.tenants and config.server.database.startswith("memory:"):
        # Nothing could ever be served: servers made by the CLI live in a database.
        problems.append("tenants: at least one [[tenants]] is needed, or a database for servers made with "
                        "`mcp-oauth-proxy servers create`")
    seen_slugs: set[str] = set()
    seen_issuers: set[str] = set()
    for i, tenant in enumerate(config.tenants):
        where = f"tenants[{i}]"
        _check_tenant(tenant, where, problems)
        if tenant.slug in seen_slugs:
            problems.append(f"{where}.slug: {tenant.slug!r} is used by another tenant")
        if tenant.issuer in seen_issuers:
            problems.append(f"{where}.issuer: used by another tenant")
        seen_slugs.add(tenant.slug)
        seen_issuers.add(tenant.issuer)
        if tenant.upstream.kind == DEV:
            _check_dev(config.server, tenant, where, problems)
    return problems


def _loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_dev(s: ServerConfig, t: TenantConfig, where: str, problems: list[str]) -> None:
    """Anyone may sign in as anyone at the development identity provider:
    it runs only where nobody else can reach it."""
    for name in ("listen", "admin_listen"):
        address = getattr(s, name)
        if address is not None and not _loopback(address.rpartition(":")[0]):
            problems.append(f"server.{name}: must be a loopback address (127.0.0.1, [::1], localhost) while "
                            f"{where} signs in with kind = \"dev\"")
    for name in ("issuer", "resource"):
        if not getattr(t, name).startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
            problems.append(f"{where}.{name}: must be http://127.0.0.1…, http://[::1]… or http://localhost… "
                            "with kind = \"dev\" (development on this machine only)")


def parse(data: Mapping[str, Any]) -> Config:
    """A checked Config from already-parsed TOML; raises ConfigError."""
    try:
        config = _converter().structure(dict(data), Config)
    except (ClassValidationError, IterableValidationError, _Bad) as exc:
        raise ConfigError(_structure_problems(exc)) from None
    problems = check(config)
    if problems:
        raise ConfigError(problems)
    return config


def load(path: str | Path) -> Config:
    """Read, structure and check a config file; raises ConfigError."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot be read ({exc.strerror})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML ({exc})"]) from None
    return parse(data)


def secret(value: str | None, env_name: str | None, environ: Mapping[str, str]) -> str | None:
    """A secret given in the file, or read from the environment (None if unset)."""
    if value is not None:
        return value
    return environ.get(env_name) or None if env_name else None


def warnings(config: Config, environ: Mapping[str, str]) -> list[str]:
    """Problems that do not stop the server, but stop a tenant's logins."""
    found = []
    for i, tenant in enumerate(config.tenants):
        up = tenant.upstream
        mutable = set((up.user_id_claim or "").split("+")) & _MUTABLE_CLAIMS
        if mutable and up.kind in ("oidc", "oauth2"):
            found.append(f"tenants[{i}].upstream.user_id_claim: {', '.join(sorted(mutable))} may be changed by the "
                         "person at some providers, and so made someone else's; prefer a stable id")
        if up.kind == DEV:
            found.append(f"tenants[{i}] signs in with the development identity provider: anyone can sign in "
                         "as anyone (for trying it on this machine only)")
        for name in ("client_id", "client_secret"):
            env = getattr(up, name + "_env")
            if env is not None and not environ.get(env):
                found.append(f"tenants[{i}].upstream.{name}_env: environment variable {env} is not set; "
                             "logins to this tenant fail until it is")
    return found
