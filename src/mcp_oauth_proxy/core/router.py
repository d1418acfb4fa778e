"""Routing a request to its flow, and the one place errors become responses:
JSON (RFC 6749 §5.2) on API endpoints, a redirect with ``iss`` to a verified
client redirect URI, or an HTML page in the browser."""

from __future__ import annotations

from collections.abc import Callable, Generator

import attrs

from . import ratelimit
from .context import Context
from .effects import Flow
from .errors import (
    STORAGE_RETRY_AFTER,
    AuthorizationRedirectError,
    BrowserError,
    FetchFailed,
    MethodNotAllowed,
    NotFound,
    OAuthError,
    StorageUnavailable,
    TemporarilyUnavailable,
    TooManyFetches,
    UpstreamNotReady,
    UpstreamUnavailable,
)
from .flows import (
    authorize,
    callback,
    connections,
    consent,
    dev_login,
    introspect,
    metadata,
    register,
    revoke,
    token,
    userinfo,
)
from .http import Request, Response, add_query, json_response, redirect
from .pages import error_page, refused_request_page
from .redirect_uris import shown_host
from .tenant import Tenant
from .upstream import with_upstream

Handler = Callable[[Request, Context], Response | Flow[Response]]


@attrs.frozen
class Route:
    methods: tuple[str, ...]
    handler: Handler
    # Called by browser-based clients with fetch(): answer CORS.
    cors: bool = False
    # Navigated to by a person: errors are HTML pages.
    browser: bool = False
    # Which of the tenant's RateLimits counts requests per remote address.
    limit: str | None = None
    # Talks to the tenant's upstream: its endpoints are resolved first
    # (ResolveUpstream), and a request is answered 503 while they cannot be.
    upstream: bool = False


def _static(fn: Callable[[Context], Response]) -> Handler:
    return lambda request, ctx: fn(ctx)


_OAUTH_ROUTES = {
    "register": Route(("POST",), register.register, cors=True, limit="register"),
    "authorize": Route(("GET", "POST"), authorize.authorize, browser=True, limit="authorize", upstream=True),
    "consent": Route(("POST",), consent.consent, browser=True, limit="consent", upstream=True),
    "callback": Route(("GET",), callback.callback, browser=True, limit="callback", upstream=True),
    "token": Route(("POST",), token.token, cors=True, limit="token"),
    "userinfo": Route(("GET", "POST"), userinfo.userinfo, cors=True, upstream=True),
    "revoke": Route(("POST",), revoke.revoke, cors=True, limit="revoke"),
    "introspect": Route(("POST",), introspect.introspect, cors=True),
    "jwks": Route(("GET",), _static(metadata.jwks), cors=True),
    # The person's own page: their grants, to see and revoke.
    # Only starting a sign-in needs the upstream (connections._sign_in): a
    # person signed in lists and disconnects while it is away.
    "connections": Route(("GET", "POST"), connections.connections, browser=True, limit="connections"),
    # The development identity provider (upstream kind "dev"): only where configured.
    "dev/authorize": Route(("GET", "POST"), dev_login.authorize, browser=True, limit="authorize"),
    "dev/token": Route(("POST",), dev_login.token),
    "dev/userinfo": Route(("GET",), dev_login.userinfo),
}
_AS_METADATA = Route(("GET",), _static(metadata.as_metadata), cors=True)
_PR_METADATA = Route(("GET",), _static(metadata.pr_metadata), cors=True)


def find_route(path: str, ctx: Context) -> Route | None:
    """The route for a path, relative to the tenant's issuer and resource."""
    issuer_path = ctx.tenant.issuer_path
    resource_path = ctx.tenant.resource_path
    as_paths = {
        # RFC 8414 §3.1: path insertion; OIDC Discovery §4: path appending.
        f"/.well-known/oauth-authorization-server{issuer_path}",
        f"/.well-known/openid-configuration{issuer_path}",
        f"{issuer_path}/.well-known/openid-configuration",
        f"{issuer_path}/.well-known/oauth-authorization-server",
    }
    if path in as_paths:
        return _AS_METADATA
    # RFC 9728 §3.1 path insertion, and the root document clients fall back to.
    if path in (f"/.well-known/oauth-protected-resource{resource_path}", "/.well-known/oauth-protected-resource"):
        return _PR_METADATA
    prefix = issuer_path + "/oauth/"
    if path.startswith(prefix):
        name = path[len(prefix):]
        if name.startswith("dev/") and not ctx.tenant.dev_login:
            return None
        return _OAUTH_ROUTES.get(name)
    return None


def endpoint_name(path: str, tenant: Tenant) -> str:
    """The endpoint a path of the tenant's is, by name, for metrics: one of
    a fixed set, whatever the path (a client chooses it)."""
    prefix = tenant.issuer_path + "/oauth/"
    if path.startswith(prefix):
        name = path[len(prefix):]
        return name if name in _OAUTH_ROUTES else "unknown"
    return "metadata" if "/.well-known/" in path else "unknown"


CORS_HEADERS = (
    ("access-control-allow-origin", "*"),
    ("access-control-expose-headers", "WWW-Authenticate"),
)


def _preflight(route: Route) -> Response:
    return Response(
        204,
        CORS_HEADERS
        + (
            ("access-control-allow-methods", ", ".join(route.methods + ("OPTIONS",))),
            ("access-control-allow-headers", "Authorization, Content-Type, MCP-Protocol-Version"),
            ("access-control-max-age", "86400"),
        ),
    )


def _error_response(exc: Exception, route: Route | None, request: Request, ctx: Context) -> Response:
    if isinstance(exc, AuthorizationRedirectError):
        # RFC 6749 §4.1.2.1 + RFC 9207 §2; 303 after our consent form POST.
        location = add_query(
            exc.redirect_uri,
            {
                "error": exc.error.error,
                "error_description": exc.error.description or None,
                "state": exc.state,
                "iss": ctx.tenant.issuer,
            },
        )
        if not exc.trusted:
            return refused_request_page(exc.error.description or exc.error.error, location,
                                        shown_host(exc.redirect_uri))
        return redirect(location, status=303 if request.method == "POST" else 302)
    if isinstance(exc, BrowserError):
        return error_page(exc.title, exc.detail, exc.status)
    if isinstance(exc, StorageUnavailable):
        # RFC 9110 §10.2.3: when to try again.
        exc = TemporarilyUnavailable("the service is temporarily unavailable; try again",
                                     headers=(("retry-after", STORAGE_RETRY_AFTER),))
    elif isinstance(exc, TooManyFetches):
        exc = TemporarilyUnavailable("the server is busy fetching other client metadata documents; try again shortly",
                                     headers=(("retry-after", str(exc.retry_after)),))
    elif isinstance(exc, FetchFailed):
        exc = UpstreamUnavailable("the identity provider could not be reached")
    assert isinstance(exc, OAuthError)
    if route is not None and route.browser:
        return error_page("Something went wrong", exc.description or exc.error, exc.status, exc.headers)
    body = {"error": exc.error}
    if exc.description:
        body["error_description"] = exc.description
    return json_response(body, exc.status, exc.headers)


def _upstream_not_ready(browser: bool) -> Response:
    # Answered before the route is handled: no rate limit counted, no CORS headers.
    exc = TemporarilyUnavailable("the identity provider is not available at the moment; try again later")
    if browser:
        return error_page("Temporarily unavailable", exc.description, exc.status, (("retry-after", "30"),))
    return json_response({"error": exc.error, "error_description": exc.description}, exc.status,
                         [("retry-after", "30")])


def handle(request: Request, ctx: Context) -> Flow[Response]:
    """The flow answering one request to one of the tenant's OAuth endpoints."""
    route = find_route(request.path, ctx)
    if route is not None and route.upstream and request.method != "OPTIONS":
        # Before anything else, as a request is answered 503 whatever it
        # asks while the upstream cannot be used.
        try:
            ctx = yield from with_upstream(ctx)
        except UpstreamNotReady:
            return _upstream_not_ready(route.browser)
    try:
        if route is None:
            raise NotFound("no such endpoint")
        if request.method == "OPTIONS" and route.cors:
            return _preflight(route)
        if request.method not in route.methods:
            raise MethodNotAllowed(
                f"use {' or '.join(route.methods)}", headers=(("allow", ", ".join(route.methods)),)
            )
        if route.limit is not None:
            yield from ratelimit.by_address(ctx, route.limit, request.remote_addr)
        result = route.handler(request, ctx)
        response = (yield from result) if isinstance(result, Generator) else result
    except (OAuthError, BrowserError, AuthorizationRedirectError, StorageUnavailable, FetchFailed,
            TooManyFetches) as exc:
        response = _error_response(exc, route, request, ctx)
    if route is not None and route.cors:
        response = response.with_headers(*CORS_HEADERS)
    return response
