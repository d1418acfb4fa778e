"""Rate limits: fixed-window counters kept in the store, so every replica
sharing the store counts together. Over the limit the answer is 429 with
Retry-After (RFC 6585 §4) and an OAuth error body."""

from __future__ import annotations

from .context import Context
from .effects import Flow, HitCounter
from .errors import OAuthError
from .tenant import RateLimit


class RateLimited(OAuthError):
    error = "temporarily_unavailable"
    status = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"too many requests; retry after {retry_after} seconds",
            headers=(("retry-after", str(retry_after)),),
        )


def check(ctx: Context, endpoint: str, limit: RateLimit, kind: str, value: str) -> Flow[None]:
    """Count this request against ``kind`` (``address`` or ``client``)."""
    allowed = limit.per_address if kind == "address" else limit.per_client
    if allowed <= 0 or not value:
        return
    window_start = ctx.now - ctx.now % limit.window
    key = f"{ctx.tenant.slug}|{endpoint}|{kind}|{value}"
    count = yield HitCounter(key, window_start, window_start + limit.window)
    if count > allowed:
        raise RateLimited(window_start + limit.window - ctx.now)
