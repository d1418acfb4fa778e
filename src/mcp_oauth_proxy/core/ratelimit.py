"""Rate limits: fixed-window counters kept in the store, so every replica
sharing the store counts together. Over the limit the answer is 429 with
Retry-After (RFC 6585 §4) and an OAuth error body.

Each count is keyed by what the requester alone controls: its address, or
a grant it holds. A client_id is no such key: it is public, and shared by
every user of one client application (always so with metadata documents),
so a count by client_id alone would let anyone spend it for everyone; it is
counted per client *at one address*. Counts keyed by an address are
skipped where the address is unknown; an address counts as
:func:`~.requesters.requester_key` reads it (an IPv6 host by its /64, a
port dropped), so one host cannot spread itself over many keys."""

from __future__ import annotations

from .context import Context
from .effects import Flow, HitCounter
from .errors import OAuthError
from .requesters import requester_key
from .tenant import RateLimit


class RateLimited(OAuthError):
    error = "temporarily_unavailable"
    status = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"too many requests; retry after {retry_after} seconds",
            headers=(("retry-after", str(retry_after)),),
        )


def by_address(ctx: Context, endpoint: str, address: str) -> Flow[None]:
    """Count this request against ``endpoint``'s limit per remote address."""
    limit: RateLimit = getattr(ctx.tenant.rate_limits, endpoint)
    if address:
        yield from _count(ctx, endpoint, limit.per_address, limit.window, f"address|{requester_key(address)}")


def by_client(ctx: Context, endpoint: str, client_id: str, address: str) -> Flow[None]:
    """... per client at one remote address."""
    limit: RateLimit = getattr(ctx.tenant.rate_limits, endpoint)
    if address:
        key = f"client|{requester_key(address)}|{client_id}"
        yield from _count(ctx, endpoint, limit.per_client, limit.window, key)


def by_grant(ctx: Context, endpoint: str, grant_id: str) -> Flow[None]:
    """... per grant (only the holder of its refresh token spends this)."""
    limit: RateLimit = getattr(ctx.tenant.rate_limits, endpoint)
    yield from _count(ctx, endpoint, limit.per_grant, limit.window, f"grant|{grant_id}")


def _count(ctx: Context, endpoint: str, allowed: int, window: int, key: str) -> Flow[None]:
    if allowed <= 0:
        return
    window_start = ctx.now - ctx.now % window
    count = yield HitCounter(f"{ctx.tenant.slug}|{endpoint}|{key}", window_start, window_start + window)
    if count > allowed:
        raise RateLimited(window_start + window - ctx.now)
