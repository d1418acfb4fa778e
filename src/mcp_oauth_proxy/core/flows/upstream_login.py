"""Sending the person to the upstream identity provider."""

from __future__ import annotations

from ..context import Context, token_hash
from ..effects import Flow, SaveAuthSession
from ..http import Response, add_query, redirect
from ..models import AuthorizationRequest, AuthSession, ConnectionsSignIn
from ..pkce import s256


def start_upstream_login(
    ctx: Context, purpose: AuthorizationRequest | ConnectionsSignIn, browser_hash: str, status: int
) -> Flow[Response]:
    """Record an authorization session for ``purpose`` (a client's
    authorization, or a sign-in to the connections page) and redirect upstream.

    ``state`` is fresh and random, stored (as a hash) only now, after consent;
    it is single use and expires with the session (MCP security best
    practices). ``state`` alone proves nothing about who brings it back: the
    session also keeps ``browser_hash``, the hash of the browser cookie of
    the person who consented (or asked for the connections page), and the
    callback is refused to any other browser. Our own PKCE verifier protects
    the upstream code, and an OIDC ``nonce`` binds the id_token to this
    session.
    """
    upstream = ctx.upstream
    state = ctx.random_string()
    verifier = ctx.random_string()
    nonce = ctx.random_string() if upstream.oidc else None
    yield SaveAuthSession(
        AuthSession(
            tenant=ctx.tenant.slug,
            state_hash=token_hash(state),
            request=purpose,
            browser_hash=browser_hash,
            upstream_issuer=upstream.issuer,
            upstream_code_verifier=verifier,
            nonce=nonce,
            expires_at=ctx.now + ctx.tenant.policy.session_ttl,
        )
    )
    params: dict[str, str] = {
        "response_type": "code",
        "client_id": upstream.client_id,
        "redirect_uri": ctx.tenant.endpoint("callback"),
        "state": state,
    }
    if upstream.scopes:
        params["scope"] = " ".join(upstream.scopes)
    if upstream.pkce:
        params["code_challenge"] = s256(verifier)
        params["code_challenge_method"] = "S256"
    if nonce is not None:
        params["nonce"] = nonce
    params.update(dict(upstream.extra_authorize_params))
    return redirect(add_query(upstream.authorization_endpoint, params), status=status)
