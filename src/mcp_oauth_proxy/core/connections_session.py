"""The signed cookie that keeps a person signed in to their connections page
(flows/connections.py) for a short while, and the token its forms carry.

The cookie names the tenant and the person the upstream login identified;
it is set only by the callback of a login this browser started (the login
is bound to the browser like a client's: flows/callback.py). Nothing is
stored while it lasts; signed out, the browser drops it and the store
remembers it ended (EndSession), so a copy opens nothing either. Stolen
and never signed out, it opens the page until it expires: it lives
minutes, not days. Like the other cookies of ours it
is ``__Host-`` over https, which requires ``Path=/`` (RFC 6265bis
§4.1.3.2): a neighbouring host cannot plant one of its own, which a cookie
scoped to the page's path could not promise.
"""

from __future__ import annotations

import hashlib
import hmac

import attrs

from .context import Context, token_hash, urlsafe
from .cookies import CONNECTIONS_COOKIE, cookie_name, opened, set_cookie, signed_value
from .effects import EndSession, Flow, SessionEnded
from .http import Request

# How long a sign-in to the connections page lasts (seconds).
SESSION_TTL = 15 * 60
_PURPOSE = "connections"


@attrs.frozen
class ConnectionsSession:
    """A person signed in to this tenant's connections page."""

    user_id: str
    # Random per sign-in: the forms' token is made from it (form_token).
    nonce: str = attrs.field(repr=False)
    expires_at: int = 0  # when its cookie does


def _name(ctx: Context) -> str:
    # One per tenant: tenants may share a host.
    return CONNECTIONS_COOKIE + ctx.tenant.slug


def start(ctx: Context, user_id: str) -> tuple[str, str]:
    """The Set-Cookie header that signs this person in to the page."""
    data = {"p": _PURPOSE, "t": ctx.tenant.slug, "u": user_id, "n": ctx.random_string(),
            "e": ctx.now + SESSION_TTL}
    return set_cookie(ctx, _name(ctx), signed_value(ctx, data), SESSION_TTL)


def end(ctx: Context, session: ConnectionsSession) -> Flow[tuple[str, str]]:
    """Signs the person out: the store remembers the sign-in ended (no copy
    of its cookie is good any more), and the Set-Cookie header that has the
    browser drop it."""
    yield EndSession(_ended(ctx, session), session.expires_at)
    return set_cookie(ctx, _name(ctx), "", 0)


def current(ctx: Context, request: Request) -> Flow[ConnectionsSession | None]:
    """Who is signed in to this tenant's page in this browser: the cookie's
    person if it is intact, this tenant's, for this page, unexpired and
    not signed out."""
    data = opened(ctx, request.cookies().get(cookie_name(ctx, _name(ctx))), _PURPOSE)
    if data is None or not isinstance(data.get("u"), str) or not isinstance(data.get("n"), str):
        return None
    session = ConnectionsSession(user_id=data["u"], nonce=data["n"], expires_at=int(data["e"]))
    if (yield SessionEnded(_ended(ctx, session), ctx.now)):
        return None
    return session


def _ended(ctx: Context, session: ConnectionsSession) -> str:
    return token_hash(f"connections-session\n{ctx.tenant.slug}\n{session.nonce}")


def form_token(ctx: Context, session: ConnectionsSession) -> str:
    """The CSRF token the page's forms carry: only a page shown to this
    session has it (a synchronizer token, derived rather than stored)."""
    message = f"connections-form|{ctx.tenant.slug}|{session.nonce}".encode()
    return urlsafe(hmac.new(ctx.cookie_key, message, hashlib.sha256).digest())


def is_form_token(ctx: Context, session: ConnectionsSession, token: str | None) -> bool:
    """Whether a form's token is this session's; compared in constant time."""
    return token is not None and token.isascii() and hmac.compare_digest(form_token(ctx, session), token)
