"""A fresh upstream access token for a grant, refreshed when it has expired.

Replicas that need the same refresh do not fight: one takes a lease in the
store and refreshes; the others wait briefly and read its result.
"""

from __future__ import annotations

import attrs

from ..context import Context
from ..effects import (
    Audit,
    ClaimUpstreamRefresh,
    Fetch,
    Flow,
    GetGrant,
    ReleaseUpstreamRefresh,
    RevokeGrant,
    Sleep,
    UpdateUpstreamTokens,
)
from ..errors import DecryptionFailed, FetchFailed, InvalidToken, UpstreamUnavailable
from ..models import Grant, UpstreamTokens
from ..upstream import UpstreamRefused, parse_token_response, token_request

WAIT_STEP = 0.2
WAIT_STEPS = 25


def _fresh(grant: Grant, ctx: Context) -> bool:
    expires = grant.upstream.expires_at
    return expires is None or expires > ctx.now + ctx.tenant.policy.upstream_refresh_skew


def load_grant(grant_id: str, ctx: Context) -> Flow[Grant]:
    """The grant, or InvalidToken (sign in again) when it is revoked or its
    upstream tokens can no longer be decrypted."""
    try:
        grant = yield GetGrant(ctx.tenant.slug, grant_id)
    except DecryptionFailed:
        # The key that sealed these upstream tokens is gone: sign in again.
        raise InvalidToken("the sign-in can no longer be used; sign in again") from None
    if grant is None:
        raise InvalidToken("the grant has been revoked")
    return grant


def _refresh(grant: Grant, ctx: Context) -> Flow[UpstreamTokens]:
    upstream = ctx.tenant.upstream
    assert grant.upstream.refresh_token is not None
    request = token_request(upstream, {"grant_type": "refresh_token", "refresh_token": grant.upstream.refresh_token})
    try:
        response = yield Fetch(request)
        tokens, _ = parse_token_response(response, ctx.now)
    except UpstreamRefused:
        # The upstream no longer honours the grant: it is over.
        yield RevokeGrant(ctx.tenant.slug, grant.grant_id)
        yield Audit("upstream_refresh_refused_grant_revoked", ctx.tenant.slug, grant.client_id, grant.user_id,
                    (("grant_id", grant.grant_id),))
        raise InvalidToken("the identity provider ended the sign-in; sign in again") from None
    except (FetchFailed, UpstreamUnavailable):
        yield ReleaseUpstreamRefresh(ctx.tenant.slug, grant.grant_id, grant.upstream_version)
        yield Audit("upstream_refresh_failed", ctx.tenant.slug, grant.client_id, grant.user_id,
                    (("grant_id", grant.grant_id),))
        raise UpstreamUnavailable("the identity provider could not refresh the sign-in") from None
    # RFC 6749 §6: a new refresh token is optional; keep the old one if none came.
    if tokens.refresh_token is None:
        tokens = attrs.evolve(tokens, refresh_token=grant.upstream.refresh_token)
    return tokens


def fresh_upstream_token(grant_id: str, ctx: Context) -> Flow[str]:
    """The grant's upstream access token, refreshed first if it has expired."""
    grant = yield from load_grant(grant_id, ctx)
    if _fresh(grant, ctx):
        return grant.upstream.access_token
    if grant.upstream.refresh_token is None:
        raise InvalidToken("the identity provider's token has expired; sign in again")
    policy = ctx.tenant.policy
    won = yield ClaimUpstreamRefresh(
        ctx.tenant.slug, grant_id, grant.upstream_version, ctx.now, ctx.now + policy.upstream_refresh_lease
    )
    if won:
        tokens = yield from _refresh(grant, ctx)
        yield UpdateUpstreamTokens(ctx.tenant.slug, grant_id, grant.upstream_version, tokens)
        return tokens.access_token
    # Another request holds the lease: wait for its result.
    for _ in range(WAIT_STEPS):
        yield Sleep(WAIT_STEP)
        current = yield from load_grant(grant_id, ctx)
        if current.upstream_version != grant.upstream_version and _fresh(current, ctx):
            return current.upstream.access_token
    raise UpstreamUnavailable("the identity provider's token is being refreshed; try again")
