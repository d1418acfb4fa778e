"""The records the core asks the store to keep.

Hashes, never the credentials themselves: ``*_hash`` fields hold
:func:`~.context.token_hash` of a token, code, state or secret. Fields marked
``secret`` in their metadata (upstream tokens, our upstream PKCE verifier) are
the only plaintext secrets; every backend encrypts them before they rest.
"""

from __future__ import annotations

import enum
import functools
from typing import Any, ClassVar

import attrs

SECRET = {"secret": True}

# Grant types (RFC 6749 §4.1, §4.4, §6; RFC 7523 §2.1).
AUTHORIZATION_CODE = "authorization_code"
REFRESH_TOKEN = "refresh_token"
CLIENT_CREDENTIALS = "client_credentials"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# The grants of clients without a browser, which only an operator may give a
# client (admin API, CLI, TOML): never dynamic registration.
MACHINE_GRANTS = (CLIENT_CREDENTIALS, JWT_BEARER)


@attrs.frozen
class Client:
    """A registered client (RFC 7591)."""

    tenant: str
    client_id: str
    redirect_uris: tuple[str, ...]
    token_endpoint_auth_method: str
    grant_types: tuple[str, ...]
    response_types: tuple[str, ...]
    application_type: str
    created_at: int
    client_name: str | None = None
    client_uri: str | None = None
    # Space-separated scopes the client may ask for; None: any of the tenant's.
    scope: str | None = None
    secret_hash: str | None = attrs.field(default=None, repr=False)
    # A registration that never completes an authorization lapses at this
    # time; None once it has (registration hygiene against spam).
    expires_at: int | None = None
    # private_key_jwt (RFC 7523 §2.2): the client's public keys, a JWK Set as
    # JSON text (kept as text: a Client is hashable), or where to fetch it.
    jwks: str | None = None
    jwks_uri: str | None = None

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"

    @property
    def is_machine(self) -> bool:
        """Registered by an operator for grants without a browser."""
        return any(g in MACHINE_GRANTS for g in self.grant_types)


@attrs.frozen
class AuthorizationRequest:
    """A client's authorization request after validation."""

    client_id: str
    redirect_uri: str
    # Whether redirect_uri was in the request: then the token request must
    # repeat it (RFC 6749 §4.1.3).
    redirect_uri_given: bool
    state: str | None
    scope: tuple[str, ...]
    resource: str
    code_challenge: str


@attrs.frozen
class ConsentRequest:
    """An authorization request waiting for the person's approve or deny."""

    tenant: str
    id_hash: str
    request: AuthorizationRequest
    # Hash of the browser cookie the consent page set: only the browser that
    # saw the page can answer it.
    browser_hash: str = attrs.field(repr=False)
    expires_at: int


@attrs.frozen
class ConnectionsSignIn:
    """What a login is for when a person signs in to see and revoke their
    grants (flows/connections.py): it ends in a session cookie for that
    page, never in a grant or a code."""


@attrs.frozen
class AuthSession:
    """Our authorization request to the upstream, keyed by the hash of its
    ``state``; taken exactly once at the callback."""

    tenant: str
    state_hash: str
    # What the login is for: a client's authorization, or the person's own
    # connections page.
    request: AuthorizationRequest | ConnectionsSignIn
    # Hash of the browser cookie of the person who consented: the callback
    # is accepted only from that browser.
    browser_hash: str = attrs.field(repr=False)
    upstream_issuer: str | None
    upstream_code_verifier: str = attrs.field(repr=False, metadata=SECRET)
    nonce: str | None
    expires_at: int


@attrs.frozen
class UpstreamTokens:
    access_token: str = attrs.field(repr=False, metadata=SECRET)
    refresh_token: str | None = attrs.field(default=None, repr=False, metadata=SECRET)
    # None: the upstream did not say; the token is used until it is refused.
    expires_at: int | None = None
    token_type: str = "Bearer"
    scope: str | None = None
    # When we received it, so its lifetime is known (None in tokens sealed
    # before this was kept; they open as they were).
    issued_at: int | None = None


@attrs.frozen
class Grant:
    """One person's approval of one client: the upstream tokens obtained at
    login, and the family of our tokens issued from it. Revoking the grant
    revokes every token of the family.

    A grant made without a browser (client credentials, an ID-JAG) has no
    code and no upstream tokens: ``code_hash`` and ``upstream`` are None."""

    tenant: str
    grant_id: str
    client_id: str
    user_id: str
    scope: tuple[str, ...]
    resource: str
    code_hash: str | None
    claims: dict[str, Any] = attrs.field(eq=False)
    upstream: UpstreamTokens | None
    created_at: int
    expires_at: int
    upstream_version: int = 0
    # An upstream refresh in progress holds this lease until the time given.
    refresh_lease_until: int | None = None
    revoked: bool = False


@attrs.frozen
class CodeGrant:
    """An authorization code (hash) and what it was issued for."""

    tenant: str
    code_hash: str
    grant_id: str
    client_id: str
    user_id: str
    redirect_uri: str
    redirect_uri_given: bool
    code_challenge: str
    scope: tuple[str, ...]
    resource: str
    expires_at: int


@attrs.frozen
class Principal:
    """Who a request to the protected resource acts for."""

    tenant: str
    user_id: str
    client_id: str
    scopes: tuple[str, ...]
    expires_at: int
    grant_id: str
    resource: str
    # How the grant was obtained (AUTHORIZATION_CODE: a person's browser login).
    grant_type: str = AUTHORIZATION_CODE

    @property
    def principal_type(self) -> str:
        """"client" when the client acts for itself (client credentials),
        else "user": a person, through a browser login or an ID-JAG."""
        return "client" if self.grant_type == CLIENT_CREDENTIALS else "user"

    @property
    def has_upstream_tokens(self) -> bool:
        """Only a browser login leaves upstream tokens to hand the MCP server."""
        return self.grant_type == AUTHORIZATION_CODE


@attrs.frozen
class AccessToken:
    tenant: str
    token_hash: str
    grant_id: str
    client_id: str
    user_id: str
    scope: tuple[str, ...]
    resource: str
    issued_at: int
    expires_at: int
    grant_type: str = AUTHORIZATION_CODE

    @functools.cached_property
    def principal(self) -> Principal:
        """Who the token acts for; made once per record, which the guard's
        token cache hands out again and again."""
        return Principal(tenant=self.tenant, user_id=self.user_id, client_id=self.client_id, scopes=self.scope,
                         expires_at=self.expires_at, grant_id=self.grant_id, resource=self.resource,
                         grant_type=self.grant_type)


@attrs.frozen
class RefreshToken:
    tenant: str
    token_hash: str
    grant_id: str
    client_id: str
    user_id: str
    scope: tuple[str, ...]
    resource: str
    issued_at: int
    expires_at: int
    # When it was first exchanged for a successor; None while current.
    rotated_at: int | None = None
    # The hash of the successor it was last exchanged for: a retry within the
    # grace window replaces that one, so a family has one live refresh token.
    successor_hash: str | None = attrs.field(default=None, repr=False)


@attrs.frozen
class Revocation:
    """Something revoked lately, recorded for the other processes sharing the
    store: what they remember of it (storage/token_cache.py) goes too."""

    tenant: str
    kind: str  # TOKEN: one access token, by hash; GRANT: every token of a grant, by id
    revoked: str
    revoked_at: int

    TOKEN: ClassVar[str] = "token"
    GRANT: ClassVar[str] = "grant"


class Rotation(enum.Enum):
    """What rotating a refresh token did."""

    ROTATED = "rotated"  # the successor was stored
    REUSED = "reused"  # presented after its grace window: the grant is revoked
    GONE = "gone"  # unknown, expired or its grant is revoked


class Redemption(enum.Enum):
    """What redeeming a code did (RedeemCode)."""

    ISSUED = "issued"  # the code is spent and its tokens stored
    SPENT = "spent"  # the code was already spent or expired: nothing stored
    REVOKED = "revoked"  # its grant is revoked: the code is spent, nothing else stored


# -- the directory kept in the database: organizations, their upstream
# OAuth configurations, and their servers (tenants) ---------------------------


@attrs.frozen
class Organization:
    """Owns OAuth configurations and servers."""

    name: str  # a slug, unique
    display_name: str
    created_at: int


@attrs.frozen
class OAuthConfig:
    """An upstream provider an organization's servers sign people in with
    (config.UpstreamConfig's settings). ``client_secret`` is sealed by every
    backend, bound to (organization, name); it is never shown."""

    organization: str
    name: str
    kind: str  # config.KINDS
    client_id: str
    client_secret: str = attrs.field(repr=False, metadata=SECRET)
    issuer: str | None = None
    domain: str | None = None
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    userinfo_endpoint: str | None = None
    scopes: tuple[str, ...] | None = None
    user_id_claim: str | None = None
    token_auth_method: str | None = None
    pkce: bool = True
    updated_at: int = 0
    tenant: str | None = None  # entra
    user_pool_id: str | None = None  # cognito


@attrs.frozen
class Server:
    """A tenant kept in the database: served like one of the configuration
    file's, with the upstream of its organization's OAuth configuration."""

    slug: str
    organization: str
    oauth_config: str  # the name of one of its organization's OAuth configurations
    issuer: str
    resource: str
    scopes: tuple[str, ...] = ("mcp",)
    required_scopes: tuple[str, ...] = ()
    # Overrides of core.tenant.Policy's fields, by name.
    policy: dict[str, int] = attrs.field(factory=dict)
    backend: str | None = None
    forward_upstream_token_header: str | None = None
    resource_name: str | None = None
    # Issuers of ID-JAGs (SEP-990) it accepts; "upstream": its OAuth
    # configuration's issuer (core.tenant.Tenant.id_jag_issuers).
    id_jag_issuers: tuple[str, ...] = ()
    updated_at: int = 0


@attrs.frozen
class DirectoryState:
    """The database's servers with their OAuth configurations (secrets
    opened), at ``version``: read together."""

    version: int
    servers: tuple[Server, ...]
    oauth_configs: tuple[OAuthConfig, ...]


# -- administration: admin tokens, the audit log, and what an operator lists -------


@attrs.frozen
class AdminToken:
    """A credential of the admin API (``mcp_admin_…``): only its hash is
    kept. ``organization`` None: global; else it sees and changes that
    organization's records only."""

    token_id: str  # public, names it in lists and audit events
    token_hash: str = attrs.field(repr=False)
    label: str
    organization: str | None
    created_at: int


@attrs.frozen
class AuditEvent:
    """One recorded event: a flow's (core.effects.Audit) or an admin
    action's. Never carries a token, code or secret. ``event_id`` is given
    by the store (0 until recorded) and orders the log."""

    at: int
    event: str
    tenant: str | None = None
    organization: str | None = None  # an admin action's organization
    client_id: str | None = None
    user_id: str | None = None
    actor: str | None = None  # the admin token's id; None for a flow's event
    detail: dict[str, str] = attrs.field(factory=dict)
    event_id: int = 0


@attrs.frozen
class GrantInfo:
    """What an operator sees of a grant: never its upstream tokens."""

    tenant: str
    grant_id: str
    client_id: str
    user_id: str
    scope: tuple[str, ...]
    resource: str
    created_at: int
    expires_at: int
    # When its newest token was issued (a login, a refresh); None: none yet.
    last_used_at: int | None = None
