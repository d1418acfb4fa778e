"""A fresh upstream access token for a grant, refreshed before it expires.

Requests (on any replica) that need the same refresh do not fight: one takes
a lease in the store and refreshes; the others wait and take the token it
stored. Should the holder die, its lease expires and a waiter takes it over;
should its refresh fail, its waiters fail with it rather than each asking
the upstream again.
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
from ..errors import (
    DecryptionFailed,
    FetchFailed,
    InvalidToken,
    NoUpstreamTokens,
    TemporarilyUnavailable,
    UpstreamUnavailable,
)
from ..models import Grant, UpstreamTokens
from ..upstream import UpstreamRefused, parse_token_response, token_request

# A waiter looks for the refresh's result after FIRST_POLL seconds, then at
# doubling intervals of at most LONGEST_POLL.
FIRST_POLL = 0.05
LONGEST_POLL = 0.5
# A waiter waits out the longest lease it can find held (a holder that died
# keeps it that long), plus this long for the refresh of whoever takes it over.
WAIT_PAST_LEASE = 5.0
# Then it gives up; by this many seconds the refresh under way will be done.
RETRY_AFTER = 2


NO_UPSTREAM_TOKENS = ("this principal has no upstream tokens: it did not sign in through the identity "
                      "provider here (a client acting for itself, or a person admitted by an ID-JAG)")


def refresh_skew(tokens: UpstreamTokens, skew: int) -> int:
    """How long before its expiry a token is refreshed: the policy's skew,
    but never more than half the token's lifetime, so a token that lives
    shorter than the skew is refreshed once per lifetime, not on every use."""
    if tokens.expires_at is None or tokens.issued_at is None:
        return skew
    return min(skew, max(0, tokens.expires_at - tokens.issued_at) // 2)


def fresh(tokens: UpstreamTokens, now: int, skew: int) -> bool:
    """Whether the token is handed out as it is, without a refresh first."""
    return tokens.expires_at is None or tokens.expires_at > now + refresh_skew(tokens, skew)


def _unexpired(tokens: UpstreamTokens, now: int) -> bool:
    return tokens.expires_at is None or tokens.expires_at > now


def load_grant(grant_id: str, ctx: Context) -> Flow[Grant]:
    """The grant, or InvalidToken (sign in again) when it is revoked or its
    upstream tokens can no longer be decrypted."""
    try:
        grant: Grant | None = yield GetGrant(ctx.tenant.slug, grant_id)
    except DecryptionFailed:
        # The key that sealed these upstream tokens is gone: sign in again.
        raise InvalidToken("the sign-in can no longer be used; sign in again") from None
    if grant is None:
        raise InvalidToken("the grant has been revoked")
    return grant


def _refresh(grant: Grant, ctx: Context, now: int) -> Flow[UpstreamTokens]:
    upstream = ctx.upstream
    assert grant.upstream is not None and grant.upstream.refresh_token is not None
    request = token_request(upstream, {"grant_type": "refresh_token", "refresh_token": grant.upstream.refresh_token})
    try:
        response = yield Fetch(request, "refresh")
        tokens, _ = parse_token_response(response, now)
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
    """The grant's upstream access token, refreshed first if it is due."""
    policy = ctx.tenant.policy
    grant = yield from load_grant(grant_id, ctx)
    if grant.upstream is None:
        raise NoUpstreamTokens(NO_UPSTREAM_TOKENS)
    # The time is ctx.now plus what we slept: never ahead of the real time,
    # so a lease is never taken over before it has expired.
    waited = 0.0
    pause = FIRST_POLL
    awaited: int | None = None  # the version another request is refreshing
    while True:
        now = ctx.now + int(waited)
        tokens = grant.upstream
        if fresh(tokens, now, policy.upstream_refresh_skew):
            return tokens.access_token
        if awaited is not None and grant.upstream_version != awaited and _unexpired(tokens, now):
            # The refresh we waited for: its token, whatever the skew says.
            return tokens.access_token
        if tokens.refresh_token is None:
            if _unexpired(tokens, now):
                return tokens.access_token
            raise InvalidToken("the identity provider's token has expired; sign in again")
        lease = grant.refresh_lease_until
        if awaited == grant.upstream_version and lease is None:
            # Its holder let go of the lease with no new tokens: the refresh failed.
            raise UpstreamUnavailable("the identity provider could not refresh the sign-in")
        if lease is None or lease <= now:
            won = yield ClaimUpstreamRefresh(
                ctx.tenant.slug, grant_id, grant.upstream_version, now, now + policy.upstream_refresh_lease
            )
            if won:
                tokens = yield from _refresh(grant, ctx, now)
                yield UpdateUpstreamTokens(ctx.tenant.slug, grant_id, grant.upstream_version, tokens)
                return tokens.access_token
        # Another request holds the lease: wait for its result.
        awaited = grant.upstream_version
        if waited >= policy.upstream_refresh_lease + WAIT_PAST_LEASE:
            raise TemporarilyUnavailable("the identity provider's token is being refreshed; try again",
                                         headers=(("retry-after", str(RETRY_AFTER)),))
        yield Sleep(pause)
        waited += pause
        pause = min(pause * 2, LONGEST_POLL)
        grant = yield from load_grant(grant_id, ctx)
