"""A tenant's settings: who we are (issuer, resource), who logs people in
(the upstream provider), and the policy (lifetimes, scopes).

These are plain values; loading them from TOML and discovering an OIDC
upstream's endpoints happen outside the core.
"""

from __future__ import annotations

import functools
from urllib.parse import urlsplit

import attrs

from .models import Client


@attrs.frozen
class Upstream:
    """The tenant's upstream identity provider, with its endpoints resolved."""

    authorization_endpoint: str
    token_endpoint: str
    client_id: str
    client_secret: str = attrs.field(default="", repr=False)
    userinfo_endpoint: str | None = None
    # The upstream's issuer: recorded per authorization session and compared
    # with the ``iss`` of its authorization response (RFC 9207 §2.4).
    issuer: str | None = None
    scopes: tuple[str, ...] = ()
    # OIDC upstreams get a nonce and have their id_token checked.
    oidc: bool = False
    # The upstream advertises authorization_response_iss_parameter_supported:
    # then a callback without ``iss`` is refused (RFC 9207 §2.4).
    iss_parameter_supported: bool = False
    # Which userinfo claim names the person stably: OIDC ``sub``, GitHub ``id``.
    user_id_claim: str = "sub"
    # How we authenticate to the upstream token endpoint.
    token_auth_method: str = "client_secret_post"
    # Whether the upstream accepts our PKCE challenge (most do; harmless if ignored).
    pkce: bool = True
    extra_authorize_params: tuple[tuple[str, str], ...] = ()
    # An organization's OAuth configuration (the organization's name): its
    # endpoints, found in its discovery document or not, are called as
    # PUBLIC_ONLY requests.
    public_only: str | None = None


@attrs.frozen
class Policy:
    """Lifetimes in seconds, and the refresh-token grace window."""

    access_token_ttl: int = 3600
    refresh_token_ttl: int = 30 * 24 * 3600
    code_ttl: int = 300
    # Authorization session with the upstream (state) and consent requests.
    session_ttl: int = 600
    # A refresh token presented again this long after its rotation is treated
    # as a retry, not as reuse (see flows/token.py).
    refresh_grace: int = 30
    # Refresh the upstream token this long before it expires, or half way
    # through its life if that is sooner (flows/upstream_token.py).
    upstream_refresh_skew: int = 60
    # How long an upstream refresh may hold its lease before another may try;
    # longer than an upstream call may take, since requests waiting for the
    # refresh take the lease over only once it has expired.
    upstream_refresh_lease: int = 30
    # How long the browser remembers approved clients (at most MAX_CONSENT_TTL).
    consent_ttl: int = 30 * 24 * 3600
    # A registered client that completes no authorization within this time lapses.
    unused_client_ttl: int = 24 * 3600


@attrs.frozen
class RateLimit:
    """At most this many requests per window (seconds), counted per remote
    address, per client at one address, and per grant (core/ratelimit.py);
    0 turns a count off. Which counts an endpoint keeps: COUNTS."""

    per_address: int = 0
    per_client: int = 0
    per_grant: int = 0
    window: int = 60


# The longest a browser may remember an approval: a withdrawal of approvals
# (a disconnect) is kept this long, so no approval outlives it, however the
# tenant's consent_ttl changes later.
MAX_CONSENT_TTL = 366 * 24 * 3600


@attrs.frozen
class RateLimits:
    # per_client: code exchanges; per_grant: refreshes of one grant.
    token: RateLimit = RateLimit(per_address=300, per_client=120, per_grant=30)
    # Also the cap on registrations per address and time.
    register: RateLimit = RateLimit(per_address=20, window=3600)
    authorize: RateLimit = RateLimit(per_address=120, per_client=60)
    callback: RateLimit = RateLimit(per_address=120)
    revoke: RateLimit = RateLimit(per_address=120)
    # Not counted: the tenant's resource servers, which introspect a token
    # for every request they serve.
    introspect: RateLimit = RateLimit(per_address=120)
    # Each request to the connections page (a sign-in started, a page, a form).
    connections: RateLimit = RateLimit(per_address=120)
    # Answers to consent pages: each is an audit event, made before anyone signs in.
    consent: RateLimit = RateLimit(per_address=30)


# The counts each endpoint keeps. A registration has no client yet; a
# callback's client is known only once its single-use state is spent, too
# late to refuse it kindly; revocation and introspection are counted before
# their client is known; only a refresh names a grant.
COUNTS = {
    "token": ("per_address", "per_client", "per_grant"),
    "authorize": ("per_address", "per_client"),
    "register": ("per_address",),
    "callback": ("per_address",),
    "revoke": ("per_address",),
    "introspect": ("per_address",),
    "connections": ("per_address",),
    "consent": ("per_address",),
}


# In Tenant.id_jag_issuers: the tenant's own upstream identity provider.
UPSTREAM_ISSUER = "upstream"


@attrs.frozen
class ResourceServer:
    """A protected resource allowed to introspect any token of the tenant
    (RFC 7662 §2.1). Only the SHA-256 of its secret is kept."""

    client_id: str
    secret_sha256: str = attrs.field(repr=False)


# Its hash is kept: the guard memoizes answers by tenant on every request.
@attrs.frozen(cache_hash=True)
class Tenant:
    slug: str
    # Exactly the public base URL; compared as a plain string by clients
    # (RFC 8414 §3.3), so a trailing slash matters.
    issuer: str
    # The protected MCP endpoint (RFC 9728 ``resource``, RFC 8707 audience).
    resource: str
    # None: known outside the core (the tenant directory's source for it);
    # a flow that needs it asks with the ResolveUpstream effect (router.py).
    upstream: Upstream | None = None
    scopes: tuple[str, ...] = ("mcp",)
    # Scopes every request to the protected resource needs.
    required_scopes: tuple[str, ...] = ()
    policy: Policy = Policy()
    resource_servers: tuple[ResourceServer, ...] = ()
    resource_name: str | None = None
    # Accept https client_ids naming a Client ID Metadata Document.
    client_metadata_documents: bool = True
    # Let such documents live on loopback addresses (local development only).
    client_metadata_allow_loopback: bool = False
    rate_limits: RateLimits = RateLimits()
    # Its upstream is the development identity provider (flows/dev_login.py),
    # served at its own /oauth/dev/ endpoints.
    dev_login: bool = False
    # Clients without a browser declared with the tenant (the configuration
    # file's machine_clients), found before the store's.
    machine_clients: tuple[Client, ...] = ()
    # The issuers whose ID-JAGs (SEP-990) the jwt-bearer grant accepts;
    # UPSTREAM_ISSUER stands for the issuer of the tenant's upstream.
    id_jag_issuers: tuple[str, ...] = ()
    # An organization's server (kept in the database): the keys it fetches
    # (its machine clients' jwks_uri, its ID-JAG issuers') are PUBLIC_ONLY
    # requests, as its upstream's are (upstream/egress.py).
    fetches_public_only: str | None = None

    # Asked on every request: parsed once per tenant.
    @functools.cached_property
    def issuer_path(self) -> str:
        """The path part of the issuer, without a trailing slash ('' at the root)."""
        return urlsplit(self.issuer).path.rstrip("/")

    @functools.cached_property
    def resource_path(self) -> str:
        """The path part of the protected resource, without a trailing slash."""
        return urlsplit(self.resource).path.rstrip("/")

    @functools.cached_property
    def resource_metadata_url(self) -> str:
        """RFC 9728 §3.1: the well-known segment inserted before the resource's path."""
        parts = urlsplit(self.resource)
        return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource{self.resource_path}"

    def endpoint(self, name: str) -> str:
        """The public URL of one of our endpoints, e.g. ``endpoint("token")``."""
        return self.issuer.rstrip("/") + "/oauth/" + name

    @property
    def secure(self) -> bool:
        return self.issuer.lower().startswith("https:")
