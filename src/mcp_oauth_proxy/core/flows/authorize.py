"""The authorization endpoint (RFC 6749 §4.1.1, OAuth 2.1 §4.1.1).

The client and redirect URI are checked first; until both are known good,
errors are HTML pages and nothing is redirected (RFC 6749 §4.1.2.1). After
that, errors go back to the client with ``state`` and ``iss`` (RFC 9207).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit

from .. import cookies, ratelimit
from ..cimd import is_metadata_url, load_browser_client
from ..context import Context, token_hash
from ..effects import Flow, SaveConsentRequest
from ..errors import (
    AuthorizationRedirectError,
    BrowserError,
    OAuthError,
    UnauthorizedClient,
    UnsupportedResponseType,
)
from ..http import Request, Response, form_params, query_params, redirect, required, single
from ..models import AuthorizationRequest, Client, ConsentRequest
from ..pages import ConsentView, consent_page
from ..pkce import check_challenge
from ..redirect_uris import is_loopback_redirect, is_this_machine, is_well_formed, matches, shown_host
from ..scopes import check_resource, choose_scope, parse_scope
from .register import shown_name
from .upstream_login import start_upstream_login

# The longest ``state`` kept (RFC 6749 sets none): each authorization
# request is stored with it until the person answers, and anyone may send
# one. Clients send some 22-64 characters; a few encode more in it.
MAX_STATE = 2048
# The longest authorization request sent on as a link (a POSTed one, below):
# servers refuse longer request heads (ours at 16 KiB).
MAX_LINK = 8192


def _client_and_redirect(params: Mapping[str, list[str]], ctx: Context) -> Flow[tuple[Client, str, bool]]:
    client_id = single(params, "client_id")
    if client_id is None:
        raise BrowserError("Invalid request", "The request has no client_id.")
    client = yield from load_browser_client(
        client_id, ctx, "The application asking for access is not registered here.")
    redirect_uri = single(params, "redirect_uri")
    if redirect_uri is None:
        # OAuth 2.1 §4.1.1: optional only when exactly one is registered (and
        # it meets today's rules: a record may be older than they are).
        if len(client.redirect_uris) != 1:
            raise BrowserError("Invalid request", "The request has no redirect_uri.")
        if not is_well_formed(client.redirect_uris[0]):
            raise BrowserError("Invalid redirect",
                               "The application's redirect_uri is not allowed; nothing was sent to it.")
        return client, client.redirect_uris[0], False
    if not matches(redirect_uri, client.redirect_uris):
        raise BrowserError(
            "Invalid redirect", "The redirect_uri is not one the application registered; nothing was sent to it."
        )
    return client, redirect_uri, True


def _validated_request(
    params: Mapping[str, list[str]], client: Client, redirect_uri: str, given: bool, ctx: Context
) -> AuthorizationRequest:
    response_type = required(params, "response_type")
    if response_type != "code":
        raise UnsupportedResponseType("only response_type=code is supported")
    if "authorization_code" not in client.grant_types:
        raise UnauthorizedClient("the client is not registered for the authorization_code grant")
    challenge = check_challenge(single(params, "code_challenge"), single(params, "code_challenge_method"))
    allowed = ctx.tenant.scopes if client.scope is None else tuple(client.scope.split(" "))
    scope = choose_scope(parse_scope(single(params, "scope")), allowed, allowed)
    resource = check_resource(params.get("resource"), ctx.tenant.resource)
    return AuthorizationRequest(
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        redirect_uri_given=given,
        state=single(params, "state"),
        scope=scope,
        resource=resource,
        code_challenge=challenge,
    )


def authorize(request: Request, ctx: Context) -> Flow[Response]:
    try:
        params = form_params(request) if request.method == "POST" else query_params(request)
    except OAuthError as exc:
        raise BrowserError("Invalid request", exc.description) from exc
    state = single(params, "state")
    if state is not None and len(state) > MAX_STATE:
        # A page, not a redirect: the error would carry the state back.
        raise BrowserError("Invalid request", f"The request's state is longer than {MAX_STATE} characters.")
    if request.method == "POST":
        # RFC 6749 §3.1 lets a client POST it, from its own site: without the
        # person's SameSite=Lax cookies, so a browser cookie set here would
        # replace theirs (ending their logins in other tabs). The same
        # request as a GET carries them.
        link = ctx.tenant.endpoint("authorize") + "?" + urlencode(
            [(name, value) for name, values in params.items() for value in values])
        if len(link) > MAX_LINK:
            raise BrowserError("Invalid request", "The authorization request is too long.")
        return redirect(link, status=303)
    client, redirect_uri, given = yield from _client_and_redirect(params, ctx)
    yield from ratelimit.by_client(ctx, "authorize", client.client_id, request.remote_addr)
    try:
        auth = _validated_request(params, client, redirect_uri, given, ctx)
    except OAuthError as exc:
        trusted = yield from cookies.trusts_destination(ctx, request, client.client_id, redirect_uri)
        raise AuthorizationRedirectError(exc, redirect_uri, single(params, "state"), trusted) from exc

    # MCP security best practices: consent per client before anything goes
    # upstream; the browser remembers what it approved (the client, where
    # the page said the person goes, the scopes). Either way the next step
    # is bound to this browser.
    browser, browser_cookie = cookies.browser_binding(request, ctx)
    if _assured(client, auth.redirect_uri) and (yield from cookies.is_approved(ctx, request, auth)):
        response = yield from start_upstream_login(ctx, auth, token_hash(browser), status=302)
        return response.with_headers(browser_cookie)
    return (yield from show_consent(ctx, client, auth, browser, browser_cookie))


def _assured(client: Client, redirect_uri: str) -> bool:
    """Whether only this client can use a code sent to ``redirect_uri``:
    it proves itself at the token endpoint, or the URI is https on a host
    of the web. RFC 8252 §8.6: a public client's loopback or private-use
    redirect can be any program's on the person's machine, so a request
    for it is shown to the person "as if no previous request had been
    approved"."""
    if client.token_endpoint_auth_method != "none":
        return True
    return redirect_uri.partition(":")[0].lower() == "https" and not is_this_machine(urlsplit(redirect_uri).hostname)


def show_consent(ctx: Context, client: Client, auth: AuthorizationRequest, browser: str,
                 browser_cookie: tuple[str, str]) -> Flow[Response]:
    request_id = ctx.random_string()
    yield SaveConsentRequest(
        ConsentRequest(
            tenant=ctx.tenant.slug,
            id_hash=token_hash(request_id),
            request=auth,
            browser_hash=token_hash(browser),
            expires_at=ctx.now + ctx.tenant.policy.session_ttl,
        )
    )
    view = ConsentView(
        action=ctx.tenant.endpoint("consent"),
        request_id=request_id,
        client_name=shown_name(client),
        client_id=client.client_id,
        redirect_host=shown_host(auth.redirect_uri),
        scopes=auth.scope,
        upstream_scopes=ctx.upstream.scopes,
        service=ctx.tenant.resource_name or ctx.tenant.issuer,
        localhost_only=all(is_loopback_redirect(u) for u in client.redirect_uris),
        connections=ctx.tenant.endpoint("connections"),
        # CIMD: the document's host is who vouches for this client.
        client_host=shown_host(client.client_id) if is_metadata_url(client.client_id) else None,
    )
    return consent_page(view, (browser_cookie,))
