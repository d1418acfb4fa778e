"""The person's answer to the consent page (a POST from our own form)."""

from __future__ import annotations

from .. import cookies
from ..cimd import load_browser_client
from ..context import Context, token_hash
from ..effects import Audit, Flow, TakeConsentRequest
from ..errors import AccessDenied, AuthorizationRedirectError, BrowserError, OAuthError
from ..http import Request, Response, form_params, single
from ..origins import is_from_our_pages
from .upstream_login import start_upstream_login


def consent(request: Request, ctx: Context) -> Flow[Response]:
    # CSRF, a second layer under the browser binding below.
    if not is_from_our_pages(request, ctx):
        raise BrowserError("Request refused", "This approval did not come from the page we showed.", status=403)
    try:
        form = form_params(request)
    except OAuthError as exc:
        raise BrowserError("Invalid request", exc.description) from exc
    request_id = single(form, "request_id")
    decision = single(form, "decision")
    if request_id is None or decision not in ("approve", "deny"):
        raise BrowserError("Invalid request", "The consent form is incomplete.")
    pending = yield TakeConsentRequest(ctx.tenant.slug, token_hash(request_id), ctx.now)
    if pending is None:
        raise BrowserError(
            "Request expired",
            "This approval request has expired or was already answered. Start again from the application.",
        )
    # CSRF: only the browser that was shown the page holds the cookie whose
    # hash the request was saved with.
    if not cookies.is_same_browser(request, ctx, pending.browser_hash):
        raise BrowserError("Request refused", "This approval did not come from the page we showed.", status=403)
    auth = pending.request
    client = yield from load_browser_client(auth.client_id, ctx, "The application is no longer registered here.")
    yield Audit("consent_refused" if decision == "deny" else "consent_given", ctx.tenant.slug, client.client_id)
    if decision == "deny":
        raise AuthorizationRedirectError(AccessDenied("the person denied the request"), auth.redirect_uri, auth.state)
    # RFC 9700 §4.12 / MCP: 303 after a form POST, so the browser does not re-POST.
    # The login session is bound to the browser that consented, whose cookie
    # is kept for the session's lifetime.
    response = yield from start_upstream_login(ctx, auth, pending.browser_hash, status=303)
    _, browser_cookie = cookies.browser_binding(request, ctx)
    remembered = yield from cookies.remember_approval(ctx, request, auth)
    return response.with_headers(remembered, browser_cookie)
