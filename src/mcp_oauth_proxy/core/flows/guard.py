"""The guard in front of the protected MCP endpoint (RFC 6750, RFC 9728 §5,
MCP authorization): a bearer token becomes a principal, or a 401/403 that
tells the client where to find our metadata."""

from __future__ import annotations

import functools

from ..context import ACCESS_PREFIX, Context, token_hash
from ..effects import Flow, GetAccessToken
from ..errors import STORAGE_RETRY_AFTER, InsufficientScope, InvalidToken, OAuthError, StorageUnavailable
from ..http import Request, Response, json_response
from ..models import AccessToken, Principal
from ..scopes import normalize_resource
from ..tenant import Tenant


def challenge(tenant: Tenant, error: OAuthError | None, scopes: tuple[str, ...]) -> str:
    """The WWW-Authenticate value (RFC 6750 §3, RFC 9728 §5.1)."""
    parts = [f'resource_metadata="{tenant.resource_metadata_url}"']
    if scopes:
        parts.append(f'scope="{" ".join(scopes)}"')
    if error is not None:
        parts.append(f'error="{error.error}"')
        if error.description:
            parts.append(f'error_description="{error.description}"')
    return "Bearer " + ", ".join(parts)


def bearer_value(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header value (RFC 6750
    §2.1); None when there is no header; raises InvalidToken for another
    scheme or an empty token."""
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.lstrip()
    if scheme.lower() != "bearer" or not value:
        raise InvalidToken("the Authorization header is not a Bearer token")
    return value


def principal_of(record: AccessToken | None, tenant: Tenant, now: int) -> Principal:
    """The principal of a looked-up access token; raises InvalidToken when
    there is none, or it is another tenant's, expired, or for another resource."""
    if record is None or record.tenant != tenant.slug:
        raise InvalidToken("the access token is not valid here")
    # ``now`` is whole seconds, rounded down: the token stays good through its
    # last second, so a client that counts expires_in from the moment it got
    # the token never sees it refused early.
    if record.expires_at < now:
        raise InvalidToken("the access token has expired")
    # Audience binding (RFC 8707): the token must be for this resource.
    # Tokens carry the tenant's resource string itself; compare it as such
    # first, and only then as URIs (the resource may have been re-configured
    # to an equivalent spelling).
    if record.resource != tenant.resource and (
        normalize_resource(record.resource) != normalize_resource(tenant.resource)
    ):
        raise InvalidToken("the access token is for another resource")
    return record.principal


def holds_until(record: AccessToken) -> int:
    """The moment (seconds since the epoch) from which :func:`principal_of`
    may answer otherwise for this record: expiry is its only test of the
    time, and a token is good through its last whole second."""
    return record.expires_at + 1


def ours(value: str) -> bool:
    """Whether a bearer value has the shape of our access tokens. Any other
    token is never looked up, accepted or passed through (MCP authorization)."""
    return value.startswith(ACCESS_PREFIX)


def lookup_of(authorization: str | None, tenant: Tenant) -> GetAccessToken | None:
    """The lookup an Authorization header value asks for; None when there
    is none; raises InvalidToken for a value that is no token of ours (any
    other token is never looked up, accepted or passed through: MCP
    authorization)."""
    value = bearer_value(authorization)
    if value is None:
        return None
    if not ours(value):
        raise InvalidToken("the access token is not valid here")
    return GetAccessToken(tenant.slug, token_hash(value))


def authenticate_bearer(request: Request, ctx: Context) -> Flow[Principal | None]:
    """The principal of a valid token; None when no token was sent; raises
    InvalidToken for a bad one."""
    lookup = lookup_of(request.header("authorization"), ctx.tenant)
    return None if lookup is None else principal_of((yield lookup), ctx.tenant, ctx.now)


def required_scopes_of(tenant: Tenant, override: tuple[str, ...] | None) -> tuple[str, ...]:
    """The scopes a request must carry: the guard's own list, else the tenant's."""
    return tenant.required_scopes if override is None else override


def missing_scopes(principal: Principal, required: tuple[str, ...]) -> list[str]:
    return [s for s in required if s not in principal.scopes]


# Browser-based MCP clients must be able to read our challenge and to send
# their preflight (which carries no token) to the protected endpoint.
CORS = (
    ("access-control-allow-origin", "*"),
    ("access-control-expose-headers", "WWW-Authenticate, Mcp-Session-Id"),
)
PREFLIGHT = CORS + (
    ("access-control-allow-methods", "GET, POST, DELETE, OPTIONS"),
    ("access-control-allow-headers",
     "Authorization, Content-Type, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID"),
    ("access-control-max-age", "86400"),
)


PREFLIGHT_RESPONSE = Response(204, PREFLIGHT)
STORAGE_UNAVAILABLE = json_response(
    {"error": "temporarily_unavailable", "error_description": "the service is temporarily unavailable"},
    503, [("retry-after", STORAGE_RETRY_AFTER)])


def denial(tenant: Tenant, error: OAuthError | None, scopes: tuple[str, ...]) -> Response:
    if error is None:
        return _no_credentials(tenant, scopes)
    headers = [("www-authenticate", challenge(tenant, error, scopes)), *CORS]
    body = {"error": error.error, "error_description": error.description}
    return json_response(body, error.status, headers)


@functools.lru_cache(maxsize=1024)
def _no_credentials(tenant: Tenant, scopes: tuple[str, ...]) -> Response:
    """RFC 6750 §3.1: a request without credentials is told no error code or
    other error information; the challenge says where to get a token. The
    same for every such request to a tenant: made once."""
    return json_response({}, 401, [("www-authenticate", challenge(tenant, None, scopes)), *CORS])


def guard(request: Request, ctx: Context, required_scopes: tuple[str, ...] | None = None) -> Flow[Principal | Response]:
    """The principal, or the 401/403 response to send instead."""
    preflight = request.header("access-control-request-method") is not None
    return (yield from decide(request.method, request.header("authorization"), preflight, ctx.tenant, ctx.now,
                              required_scopes))


def decide(method: str, authorization: str | None, preflight: bool, tenant: Tenant, now: int,
           required_scopes: tuple[str, ...] | None) -> Flow[Principal | Response]:
    """The guard's one decision, from what it reads of a request (its method,
    its Authorization header, whether it is a CORS preflight), the tenant,
    the time and the scopes required: the principal, or the 401/403 (or
    503) to send instead. At most one effect: the token's lookup. Its two
    halves, :func:`first_step` and :func:`settle`, are what the guard's
    fast driver (adapters/site.py) runs when memory holds the token."""
    step = first_step(method, authorization, preflight, tenant, required_scopes)
    if isinstance(step, Response):
        return step
    return (yield from after_lookup(step, tenant, now, required_scopes))


def first_step(method: str, authorization: str | None, preflight: bool, tenant: Tenant,
               required_scopes: tuple[str, ...] | None) -> Response | GetAccessToken:
    """The decision up to the token's lookup: the lookup to make, or the
    answer that needs none (a preflight, no or a malformed token)."""
    if method == "OPTIONS" and preflight:
        # A CORS preflight (Fetch standard §4.8) never carries credentials.
        return PREFLIGHT_RESPONSE
    try:
        lookup = lookup_of(authorization, tenant)
    except InvalidToken as exc:
        return denial(tenant, exc, _advertised(tenant, required_scopes))
    if lookup is None:
        return denial(tenant, None, _advertised(tenant, required_scopes))
    return lookup


def after_lookup(lookup: GetAccessToken, tenant: Tenant, now: int,
                 required_scopes: tuple[str, ...] | None) -> Flow[Principal | Response]:
    """The decision from the token's lookup on."""
    try:
        record = yield lookup
    except StorageUnavailable:
        # Not the client's fault and not a verdict on its token: try again.
        return STORAGE_UNAVAILABLE
    return settle(record, tenant, now, required_scopes)


def settle(record: AccessToken | None, tenant: Tenant, now: int,
           required_scopes: tuple[str, ...] | None) -> Principal | Response:
    """The decision once the token's record is known (None: none found)."""
    required = required_scopes_of(tenant, required_scopes)
    try:
        principal = principal_of(record, tenant, now)
    except InvalidToken as exc:
        return denial(tenant, exc, _advertised(tenant, required_scopes))
    missing = missing_scopes(principal, required)
    if missing:
        # RFC 6750 §3.1 / MCP: 403 insufficient_scope names the scopes needed.
        return denial(tenant, InsufficientScope("the token lacks scope: " + " ".join(missing)), required)
    return principal


def _advertised(tenant: Tenant, required_scopes: tuple[str, ...] | None) -> tuple[str, ...]:
    # The scopes a challenge names: those required, else all the tenant's.
    return required_scopes_of(tenant, required_scopes) or tenant.scopes
