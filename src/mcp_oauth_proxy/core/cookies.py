"""The browser's cookies: the signed list of approvals a person gave (a
client, the destination the consent page named, the scopes), and
the browser cookie that binds each step of a login to the browser that took
the step before (the consent form to the page, the upstream callback to the
consent). Their signing serves the connections page's session cookie too
(connections_session.py)."""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
from typing import Any

from .context import Context, from_urlsafe, token_hash, urlsafe
from .effects import ApprovalsWithdrawn, Flow, WithdrawApprovals
from .http import Request, parse_json
from .models import AuthorizationRequest
from .redirect_uris import shown_host
from .tenant import MAX_CONSENT_TTL

# The browser remembers this many approvals per tenant, newest first, in
# at most this many bytes of JSON (a cookie holds about 4 KB, base64 4/3 of it).
MAX_REMEMBERED = 20
_MAX_PAYLOAD = 2800
# One consent cookie per tenant (tenants may share a host, and would
# overwrite each other's), one browser cookie per host.
CONSENT_COOKIE = "mcp_consent_"
BROWSER_COOKIE = "mcp_browser"
# The admin console's session cookie (admin/console_session.py).
ADMIN_SESSION_COOKIE = "mcp_admin_session"
# Signed in to the connections page, one per tenant (connections_session.py).
CONNECTIONS_COOKIE = "mcp_connections_"
# Seconds an approval must be given after a withdrawal to count: replicas'
# clocks disagree a little (an approval stamped by one running ahead would
# otherwise pass for one given after a disconnect made on another).
CLOCK_SKEW = 60
# A browser value shorter than ours (256 bits, base64url) is not ours: replaced.
_BROWSER_VALUE_LENGTH = 43


def cookie_name(ctx: Context, base: str) -> str:
    # __Host- binds the cookie to this exact host, https only (RFC 6265bis §4.1.3.2).
    return ("__Host-" if ctx.tenant.secure else "") + base


def set_cookie(ctx: Context, base: str, value: str, max_age: int) -> tuple[str, str]:
    attrs = [f"{cookie_name(ctx, base)}={value}", "Path=/", "HttpOnly", "SameSite=Lax", f"Max-Age={max_age}"]
    if ctx.tenant.secure:
        attrs.append("Secure")
    return ("set-cookie", "; ".join(attrs))


def _sign(ctx: Context, payload: bytes) -> str:
    return urlsafe(hmac.new(ctx.cookie_key, payload, hashlib.sha256).digest())


def signed_value(ctx: Context, data: dict[str, Any]) -> str:
    """A cookie value carrying ``data`` (with "t", the tenant, and "e", its
    expiry) as JSON, signed with the cookie key: :func:`opened` reads it."""
    payload = json.dumps(data, separators=(",", ":")).encode()
    return urlsafe(payload) + "." + _sign(ctx, payload)


def opened(ctx: Context, raw: str | None, purpose: str | None = None) -> dict[str, Any] | None:
    """The data of a signed cookie value if it is intact, ours, for this
    tenant, unexpired and made for ``purpose`` ("p"; the consent cookie has
    none), so a value one cookie was given opens as no other; else None."""
    if not raw or "." not in raw:
        return None
    body, _, signature = raw.partition(".")
    try:
        payload = from_urlsafe(body)
    except (binascii.Error, ValueError):
        return None
    # compare_digest takes str only when it is ASCII.
    if not signature.isascii() or not hmac.compare_digest(_sign(ctx, payload), signature):
        return None
    try:
        data = parse_json(payload)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("t") != ctx.tenant.slug or data.get("p") != purpose:
        return None
    if not isinstance(data.get("e"), int) or data["e"] <= ctx.now:
        return None
    return data


def _approvals(ctx: Context, request: Request) -> list[list[Any]]:
    """What this browser approved for this tenant, [client_id, destination,
    scopes, when] each, if the cookie is intact, ours, for this tenant and
    unexpired; else nothing."""
    data = opened(ctx, request.cookies().get(cookie_name(ctx, CONSENT_COOKIE + ctx.tenant.slug)))
    approvals = data.get("a") if data is not None else None
    if not isinstance(approvals, list) or not all(_is_approval(a) for a in approvals):
        return []
    # Each lapses consent_ttl after it was given, whenever the cookie was
    # last rewritten: so before the record of a withdrawal made after it
    # (WithdrawApprovals) lapses, and never comes back with a new cookie.
    return [approval for approval in approvals if approval[3] + ctx.tenant.policy.consent_ttl > ctx.now]


def _is_approval(item: object) -> bool:
    return (isinstance(item, list) and len(item) == 4 and isinstance(item[0], str) and isinstance(item[1], str)
            and isinstance(item[2], list) and all(isinstance(scope, str) for scope in item[2])
            and type(item[3]) is int)


def _destination(auth: AuthorizationRequest) -> str:
    # What the consent page named as where the person is sent.
    return shown_host(auth.redirect_uri)


def _standing(ctx: Context, request: Request, client_id: str) -> Flow[list[list[Any]]]:
    """This browser's approvals, less those of ``client_id`` given no later
    than its approvals were withdrawn (a person disconnected it: it asks
    again)."""
    approvals = _approvals(ctx, request)
    if not any(approval[0] == client_id for approval in approvals):
        return approvals
    withdrawn = yield ApprovalsWithdrawn(ctx.tenant.slug, client_id, ctx.now)
    if withdrawn is None:
        return approvals
    return [approval for approval in approvals if approval[0] != client_id or approval[3] > withdrawn + CLOCK_SKEW]


def is_approved(ctx: Context, request: Request, auth: AuthorizationRequest) -> Flow[bool]:
    """Whether this browser approved this client sending the person to this
    destination, for these scopes or more, since its approvals were last
    withdrawn: an approval shown for one redirect host is no approval for
    another (the consent page named it)."""
    destination = _destination(auth)
    approvals = yield from _standing(ctx, request, auth.client_id)
    return any(client == auth.client_id and where == destination and set(auth.scope) <= set(scopes)
               for client, where, scopes, _ in approvals)


def trusts_destination(ctx: Context, request: Request, client_id: str, redirect_uri: str) -> Flow[bool]:
    """Whether this browser approved this client sending the person to the
    destination ``redirect_uri`` names (for any scopes): the person has
    seen it on the consent page, and trusted it."""
    destination = shown_host(redirect_uri)
    approvals = yield from _standing(ctx, request, client_id)
    return any(client == client_id and where == destination for client, where, _, _ in approvals)


def remember_approval(ctx: Context, request: Request, auth: AuthorizationRequest) -> Flow[tuple[str, str]]:
    """The Set-Cookie header that adds this approval to the browser's list,
    newest first: at most MAX_REMEMBERED, and few enough to fit a cookie."""
    key = [auth.client_id, _destination(auth)]
    scopes = set(auth.scope)
    kept = []
    for approval in (yield from _standing(ctx, request, auth.client_id)):
        if approval[:2] == key:
            scopes.update(approval[2])  # what was approved before stays approved
        else:
            kept.append(approval)
    approvals = [[*key, sorted(scopes), ctx.now], *kept][:MAX_REMEMBERED]
    ttl = ctx.tenant.policy.consent_ttl
    while True:
        data = {"t": ctx.tenant.slug, "a": approvals, "e": ctx.now + ttl}
        if len(json.dumps(data, separators=(",", ":"))) <= _MAX_PAYLOAD or len(approvals) == 1:
            break
        approvals.pop()  # the oldest goes
    return set_cookie(ctx, CONSENT_COOKIE + ctx.tenant.slug, signed_value(ctx, data), ttl)


def withdraw_approvals(ctx: Context, client_id: str) -> Flow[None]:
    """Every browser's remembered approval of ``client_id`` on this tenant,
    given until now, counts no more: the application asks again."""
    # Kept as long as any approval can live (the consent_ttl may be raised
    # later, and an approval lapses by the consent_ttl of its reading).
    yield WithdrawApprovals(ctx.tenant.slug, client_id, ctx.now, ctx.now + MAX_CONSENT_TTL + CLOCK_SKEW)


def is_ours(name: str) -> bool:
    """Whether a cookie of this name is one of ours (the forwarder keeps them
    from the backend)."""
    name = name.removeprefix("__Host-")
    # The admin console's session too: on one host, a browser sends it to
    # the public listener's port as well (cookies do not keep to a port).
    return name in (BROWSER_COOKIE, ADMIN_SESSION_COOKIE) or name.startswith((CONSENT_COOKIE, CONNECTIONS_COOKIE))


def browser_binding(request: Request, ctx: Context) -> tuple[str, tuple[str, str]]:
    """This browser's value, and the Set-Cookie header that keeps it for
    another session lifetime. One value per browser, reused, so that logins in
    two tabs do not undo each other; the hash of it is stored with each
    consent request and login session, and the next step checks it
    (:func:`is_same_browser`)."""
    value = request.cookies().get(cookie_name(ctx, BROWSER_COOKIE))
    if value is None or len(value) < _BROWSER_VALUE_LENGTH:
        value = ctx.random_string()
    return value, set_cookie(ctx, BROWSER_COOKIE, value, ctx.tenant.policy.session_ttl)


def is_same_browser(request: Request, ctx: Context, browser_hash: str) -> bool:
    """Whether this request comes from the browser whose value hashes to
    ``browser_hash``; compared in constant time."""
    value = request.cookies().get(cookie_name(ctx, BROWSER_COOKIE))
    return value is not None and hmac.compare_digest(token_hash(value), browser_hash)
