"""The guard in front of the protected MCP endpoint (RFC 6750, RFC 9728 §5,
MCP authorization): a bearer token becomes a principal, or a 401/403 that
tells the client where to find our metadata."""

from __future__ import annotations

from ..context import ACCESS_PREFIX, Context, token_hash
from ..effects import Flow, GetAccessToken
from ..errors import STORAGE_RETRY_AFTER, InsufficientScope, InvalidToken, OAuthError, StorageUnavailable
from ..http import Request, Response, json_response
from ..models import AccessToken, Principal
from ..scopes import normalize_resource
from ..tenant import Tenant
from .metadata import resource_metadata_url

def challenge(ctx: Context, error: OAuthError | None, scopes: tuple[str, ...]) -> str:
    """The WWW-Authenticate value (RFC 6750 §3, RFC 9728 §5.1)."""
    parts = [f'resource_metadata="{resource_metadata_url(ctx)}"']
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


def ours(value: str) -> bool:
    """Whether a bearer value has the shape of our access tokens. Any other
    token is never looked up, accepted or passed through (MCP authorization)."""
    return value.startswith(ACCESS_PREFIX)


def authenticate_bearer(request: Request, ctx: Context) -> Flow[Principal | None]:
    """The principal of a valid token; None when no token was sent; raises
    InvalidToken for a bad one."""
    value = bearer_value(request.header("authorization"))
    if value is None:
        return None
    if not ours(value):
        raise InvalidToken("the access token is not valid here")
    record = yield GetAccessToken(ctx.tenant.slug, token_hash(value))
    return principal_of(record, ctx.tenant, ctx.now)


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
    ("access-control-allow-headers", "Authorization, Content-Type, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID"),
    ("access-control-max-age", "86400"),
)


def denial(ctx: Context, error: OAuthError | None, scopes: tuple[str, ...]) -> Response:
    headers = [("www-authenticate", challenge(ctx, error, scopes)), *CORS]
    if error is None:
        # RFC 6750 §3.1: a request without credentials is told no error code or
        # other error information; the challenge says where to get a token.
        return json_response({}, 401, headers)
    body = {"error": error.error, "error_description": error.description}
    return json_response(body, error.status, headers)


def guard(request: Request, ctx: Context, required_scopes: tuple[str, ...] | None = None) -> Flow[Principal | Response]:
    """The principal, or the 401/403 response to send instead."""
    if request.method == "OPTIONS" and request.header("access-control-request-method") is not None:
        # A CORS preflight (Fetch standard §4.8) never carries credentials.
        return Response(204, PREFLIGHT)
    required = required_scopes_of(ctx.tenant, required_scopes)
    advertised = required or ctx.tenant.scopes
    try:
        principal = yield from authenticate_bearer(request, ctx)
    except InvalidToken as exc:
        return denial(ctx, exc, advertised)
    except StorageUnavailable:
        # Not the client's fault and not a verdict on its token: try again.
        return json_response(
            {"error": "temporarily_unavailable", "error_description": "the service is temporarily unavailable"},
            503,
            [("retry-after", STORAGE_RETRY_AFTER)],
        )
    if principal is None:
        return denial(ctx, None, advertised)
    missing = missing_scopes(principal, required)
    if missing:
        # RFC 6750 §3.1 / MCP: 403 insufficient_scope names the scopes needed.
        return denial(ctx, InsufficientScope("the token lacks scope: " + " ".join(missing)), required)
    return principal
