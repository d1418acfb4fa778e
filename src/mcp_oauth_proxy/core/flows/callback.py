"""The upstream's redirect back to us: check it, exchange the upstream code,
learn who the person is, and give the client our own one-time code (or,
for a sign-in to the connections page, sign the person in there)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import cookies
from ..context import Context, token_hash
from ..effects import Audit, Fetch, Flow, SaveGrantAndCode, TakeAuthSession
from ..errors import (
    AccessDenied,
    AuthorizationRedirectError,
    BrowserError,
    FetchFailed,
    OAuthError,
    TemporarilyUnavailable,
    UpstreamServerError,
    UpstreamUnavailable,
)
from ..http import Request, Response, add_query, query_params, redirect, single
from ..models import (
    AuthorizationRequest,
    AuthSession,
    CodeGrant,
    ConnectionsSignIn,
    Grant,
    UpstreamTokens,
)
from ..upstream import (
    UpstreamRefused,
    check_id_token,
    id_token_claims,
    issuer_fits,
    parse_token_response,
    parse_userinfo,
    token_request,
    user_id_from,
    userinfo_request,
)
from ..user_ids import person_id_problem
from . import connections


def _upstream_error(code: str) -> OAuthError:
    """Upstream codes the client can act on are passed on as they are; the
    rest are our configuration's business, and become access_denied."""
    if code == "temporarily_unavailable":
        return TemporarilyUnavailable("the identity provider is temporarily unavailable",
                                      headers=(("retry-after", "30"),))
    if code == "server_error":
        # Its failure, not ours: a page says 502 (a client gets server_error).
        return UpstreamServerError("the identity provider had an error")
    return AccessDenied("the sign-in at the identity provider was not completed")


def _check_issuer(params: Mapping[str, list[str]], session: AuthSession, ctx: Context) -> None:
    """RFC 9207 §2.4: mix-up defence as a client of the upstream."""
    iss = single(params, "iss")
    expected = session.upstream_issuer
    if iss is None:
        if ctx.upstream.iss_parameter_supported:
            raise AccessDenied("the identity provider's response has no iss")
        return
    if expected is None or not issuer_fits(expected, iss):
        raise AccessDenied("the response came from an unexpected identity provider")


def _exchange(code: str, session: AuthSession, ctx: Context) -> Flow[tuple[UpstreamTokens, dict[str, Any]]]:
    upstream = ctx.upstream
    params = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": ctx.tenant.endpoint("callback"),
    }
    if upstream.pkce:
        params["code_verifier"] = session.upstream_code_verifier
    response = yield Fetch(token_request(upstream, params), "token")
    return parse_token_response(response, ctx.now)


def _identify(tokens: UpstreamTokens, document: dict[str, Any], session: AuthSession,
              ctx: Context) -> Flow[tuple[str, dict[str, Any]]]:
    """The person's stable id and profile claims."""
    upstream = ctx.upstream
    sub = None
    claims: dict[str, Any] = {}
    signed: dict[str, Any] = {}
    if upstream.oidc:
        id_token = document.get("id_token")
        if not isinstance(id_token, str):
            raise UpstreamUnavailable("the identity provider sent no id_token")
        claims = id_token_claims(id_token)
        sub = check_id_token(claims, upstream, session.nonce, ctx.now)
        signed = claims
        claims = {k: v for k, v in claims.items()
                  if k not in ("nonce", "at_hash", "c_hash", "aud", "exp", "iat", "auth_time", "azp")}
    if upstream.userinfo_endpoint is not None:
        try:
            profile = parse_userinfo((yield Fetch(userinfo_request(upstream, tokens.access_token), "userinfo")))
        except (FetchFailed, UpstreamUnavailable):
            if sub is None:
                raise
            profile = {}
        # OIDC Core §5.3.2: the UserInfo sub MUST match the id_token's.
        if sub is not None and profile and profile.get("sub") != sub:
            raise UpstreamRefused("the identity provider's profile is for another person")
        claims.update(profile)
    # The id_token's claims win over the profile's for the user id: its issuer was checked.
    user_id = user_id_from({**claims, **signed}, upstream.user_id_claim)
    problem = person_id_problem(user_id)
    if problem is not None:
        raise UpstreamRefused(f"the identity provider named the person with an id this server cannot use ({problem})")
    return user_id, claims


def callback(request: Request, ctx: Context) -> Flow[Response]:
    try:
        params = query_params(request)
    except OAuthError as exc:
        raise BrowserError("Invalid request", exc.description) from exc
    state = single(params, "state")
    if state is None:
        raise BrowserError("Invalid request", "The identity provider's answer has no state.")
    session = yield TakeAuthSession(ctx.tenant.slug, token_hash(state), ctx.now)
    if session is None:
        raise BrowserError(
            "Sign-in expired", "This sign-in has expired or was already completed. Start again from the application."
        )
    purpose = session.request
    # The state came back through the identity provider, so it proves nothing
    # about which browser brings it: only the one that consented (or asked
    # for the connections page) may finish (MCP security best practices,
    # confused deputy; login CSRF). Anyone else, such as a person lured to a
    # login link another started, gets nothing, and the session, now spent,
    # can no longer be finished by anyone.
    if not cookies.is_same_browser(request, ctx, session.browser_hash):
        client_id = purpose.client_id if isinstance(purpose, AuthorizationRequest) else None
        yield Audit("login_refused_other_browser", ctx.tenant.slug, client_id)
        raise BrowserError(
            "Sign-in refused",
            "This sign-in was started in another browser, so nothing was sent to the application. "
            "If you started it, start again from the application in this browser.",
            status=403,
        )
    if isinstance(purpose, ConnectionsSignIn):
        # A failure is the person's to see, on a page: no client waits.
        user_id, _, _ = yield from _signed_in_upstream(params, session, ctx)
        return (yield from connections.signed_in(ctx, user_id))
    try:
        user_id, claims, tokens = yield from _signed_in_upstream(params, session, ctx)
    except OAuthError as exc:
        raise AuthorizationRedirectError(exc, purpose.redirect_uri, purpose.state) from exc
    return (yield from _grant_with_code(purpose, user_id, claims, tokens, ctx))


def _signed_in_upstream(params: Mapping[str, list[str]], session: AuthSession,
                        ctx: Context) -> Flow[tuple[str, dict[str, Any], UpstreamTokens]]:
    """Who the upstream signed in: the person's stable id, their claims and
    the upstream tokens. OAuthError if the upstream's answer is refused."""
    _check_issuer(params, session, ctx)
    error = single(params, "error")
    if error is not None:
        raise _upstream_error(error)
    code = single(params, "code")
    if code is None:
        raise AccessDenied("the identity provider sent no code")
    try:
        tokens, document = yield from _exchange(code, session, ctx)
        user_id, claims = yield from _identify(tokens, document, session, ctx)
    except FetchFailed as exc:
        raise UpstreamUnavailable("the identity provider could not be reached") from exc
    except UpstreamRefused as exc:
        raise AccessDenied(exc.description) from exc
    return user_id, claims, tokens


def _grant_with_code(auth: AuthorizationRequest, user_id: str, claims: dict[str, Any], tokens: UpstreamTokens,
                     ctx: Context) -> Flow[Response]:
    """Store the person's grant to the client, and send them back to it with
    our one-time code."""
    policy = ctx.tenant.policy
    code_value = ctx.token("mcp_code_")
    code_hash = token_hash(code_value)
    grant = Grant(
        tenant=ctx.tenant.slug,
        grant_id=ctx.new_id(),
        client_id=auth.client_id,
        user_id=user_id,
        scope=auth.scope,
        resource=auth.resource,
        code_hash=code_hash,
        claims=claims,
        upstream=tokens,
        created_at=ctx.now,
        expires_at=ctx.now + policy.refresh_token_ttl,
    )
    yield SaveGrantAndCode(
        grant,
        CodeGrant(
            tenant=ctx.tenant.slug,
            code_hash=code_hash,
            grant_id=grant.grant_id,
            client_id=auth.client_id,
            user_id=user_id,
            redirect_uri=auth.redirect_uri,
            redirect_uri_given=auth.redirect_uri_given,
            code_challenge=auth.code_challenge,
            scope=auth.scope,
            resource=auth.resource,
            expires_at=ctx.now + policy.code_ttl,
        ),
    )
    yield Audit("login_completed", ctx.tenant.slug, auth.client_id, user_id, (("grant_id", grant.grant_id),))
    # RFC 9207 §2: iss in every authorization response.
    location = add_query(auth.redirect_uri, {"code": code_value, "state": auth.state, "iss": ctx.tenant.issuer})
    return redirect(location)
