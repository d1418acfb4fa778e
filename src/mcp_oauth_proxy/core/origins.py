"""Whether a form POST came from one of our own pages, by its Origin header
(RFC 6454 §7): a second layer of CSRF defence, under each form's own proof
(the consent page's browser binding, the connections page's form token)."""

from __future__ import annotations

from urllib.parse import urlsplit

from .context import Context
from .http import Request


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def is_from_our_pages(request: Request, ctx: Context) -> bool:
    """False for a form another site posted: its Origin names that site.
    Our own pages' forms say "null" (their Referrer-Policy is no-referrer,
    Fetch §3.2) or our origin; a browser that sends no Origin is left to
    the form's own proof."""
    origin = request.header("origin")
    return origin is None or origin.lower() in ("null", _origin_of(ctx.tenant.issuer))
