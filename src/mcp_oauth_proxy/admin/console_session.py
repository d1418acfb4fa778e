"""The console's sign-in session: an admin token, once checked, becomes a
signed cookie naming its id and an expiry; every request looks the token up
again (so revoking the token, or deleting its organization, ends its
sessions at once), and every form carries a CSRF token bound to the cookie.

The cookie is HttpOnly and SameSite=Strict, ``Secure`` with the ``__Host-``
prefix on https (RFC 6265bis §4.1.3.2: the browser keeps it to this host
and path ``/``). Signing out clears it and ends the session in the store
(EndSession), so a copy of the cookie is refused too, on every replica."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from ..core.context import token_hash, urlsafe
from ..core.cookies import ADMIN_SESSION_COOKIE
from .operations import Actor

SESSION_SECONDS = 8 * 3600
COOKIE = ADMIN_SESSION_COOKIE


def cookie_name(secure: bool) -> str:
    return f"__Host-{COOKIE}" if secure else COOKIE


def _mac(key: bytes, text: str) -> str:
    return urlsafe(hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest())


def new_session(key: bytes, token_id: str, now: int) -> str:
    body = f"{token_id}.{now + SESSION_SECONDS}.{secrets.token_hex(8)}"
    return f"{body}.{_mac(key, 'session:' + body)}"


def set_cookie(value: str, secure: bool) -> tuple[str, str]:
    attributes = f"Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}" + ("; Secure" if secure else "")
    return ("set-cookie", f"{cookie_name(secure)}={value}; {attributes}")


def clear_cookie(secure: bool) -> tuple[str, str]:
    return ("set-cookie", f"{cookie_name(secure)}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
            + ("; Secure" if secure else ""))


def session_actor(key: bytes, value: str | None, now: int, store: Any) -> Actor | None:
    """The actor of a session cookie: its signature good, unexpired, not
    signed out, its admin token still there."""
    if not value or value.count(".") != 3:
        return None
    body, _, mac = value.rpartition(".")
    token_id, expires, _nonce = body.split(".")
    if not _same(mac, _mac(key, "session:" + body)):
        return None
    if not expires.isdigit() or int(expires) <= now:
        return None
    if store.session_ended(session_hash=_ended(body), now=now):
        return None
    token = next((t for t in store.list_admin_tokens() if t.token_id == token_id), None)
    return None if token is None else Actor(token.token_id, token.organization)


def end_session(value: str, store: Any) -> None:
    """Signs out the session of a cookie session_actor accepted: until it
    would have expired, no copy of it is accepted either."""
    body = value.rpartition(".")[0]
    store.end_session(session_hash=_ended(body), expires_at=int(body.split(".")[1]))


def _ended(body: str) -> str:
    return token_hash("console-session\n" + body)


def csrf_token(key: bytes, session: str) -> str:
    return _mac(key, "csrf:" + session)


def csrf_ok(key: bytes, session: str, given: str | None) -> bool:
    return given is not None and _same(given, csrf_token(key, session))


def _same(given: str, expected: str) -> bool:
    """Constant-time, whatever characters a client sent (compare_digest
    takes text only when it is ASCII)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("ascii"))


def console_key(cookie_key: bytes) -> bytes:
    """A key of the console's own, from the server's cookie key: a value
    signed for one purpose never passes for another."""
    return hmac.new(cookie_key, b"mcp-oauth-proxy admin console", hashlib.sha256).digest()
