"""The connections page, ``/oauth/connections``: a person signs in through
the tenant's upstream, sees the grants they gave this tenant's clients, and
revokes any of them.

Signing in is the upstream login a client's authorization uses
(upstream_login.py, callback.py), bound to this browser the same way; its
session is marked ConnectionsSignIn, and the callback ends it here
(:func:`signed_in`): a short-lived signed cookie naming the person
(connections_session.py), never a grant or a code.
"""

from __future__ import annotations

from .. import connections_session, cookies
from ..cimd import is_metadata_url
from ..connections_page import Connection, ConnectionsView, connections_page, signed_out_page
from ..connections_session import ConnectionsSession
from ..context import Context, token_hash
from ..effects import Audit, Flow, GetClient, GetGrantInfo, ListGrants, RevokeGrant
from ..errors import BrowserError, OAuthError, UpstreamNotReady
from ..http import Request, Response, add_query, form_params, query_params, redirect, single
from ..models import Client, ConnectionsSignIn, GrantInfo
from ..origins import is_from_our_pages
from ..pages import error_page
from ..redirect_uris import shown_host
from ..upstream import with_upstream
from .register import shown_name
from .upstream_login import start_upstream_login

# Grants listed on one page; a person with more pages on.
PAGE_SIZE = 50
_DISCONNECTED = "The application was disconnected: its tokens no longer work."


def connections(request: Request, ctx: Context) -> Flow[Response]:
    if request.method == "POST":
        return (yield from _answer_form(request, ctx))
    session = yield from connections_session.current(ctx, request)
    if session is None:
        return (yield from _sign_in(request, ctx))
    return (yield from _show(request, ctx, session))


def _sign_in(request: Request, ctx: Context) -> Flow[Response]:
    # The state that comes back proves nothing about the browser bringing
    # it: the login is bound to this one (the callback checks), so nobody
    # can sign another browser in to their own page (login CSRF).
    try:
        ctx = yield from with_upstream(ctx)
    except UpstreamNotReady:
        return error_page("Temporarily unavailable", "The identity provider is not available at the moment; "
                          "try again later.", 503, (("retry-after", "30"),))
    browser, browser_cookie = cookies.browser_binding(request, ctx)
    response = yield from start_upstream_login(ctx, ConnectionsSignIn(), token_hash(browser), status=302)
    return response.with_headers(browser_cookie)


def signed_in(ctx: Context, user_id: str) -> Flow[Response]:
    """The end of a sign-in to the page, at the callback: the person the
    upstream named is signed in, in this browser only."""
    yield Audit("connections_signed_in", ctx.tenant.slug, None, user_id)
    # 303: the page is fetched anew, with the cookie (SameSite=Lax lets a
    # top-level navigation from the identity provider carry it).
    return redirect(ctx.tenant.endpoint("connections"), status=303,
                    headers=(connections_session.start(ctx, user_id),))


def _show(request: Request, ctx: Context, session: ConnectionsSession) -> Flow[Response]:
    try:
        params = query_params(request)
    except OAuthError as exc:
        raise BrowserError("Invalid request", exc.description) from exc
    after = single(params, "after")
    grants = yield ListGrants(now=ctx.now, limit=PAGE_SIZE + 1, after=(ctx.tenant.slug, after) if after else None,
                              tenant=ctx.tenant.slug, user_id=session.user_id)
    shown = grants[:PAGE_SIZE]
    clients: dict[str, Client | None] = {}
    for grant in shown:
        if grant.client_id not in clients and not is_metadata_url(grant.client_id):
            clients[grant.client_id] = yield GetClient(ctx.tenant.slug, grant.client_id)
    action = ctx.tenant.endpoint("connections")
    return connections_page(ConnectionsView(
        action=action,
        form_token=connections_session.form_token(ctx, session),
        service=ctx.tenant.resource_name or ctx.tenant.issuer,
        user_id=session.user_id,
        connections=tuple(_connection(grant, clients.get(grant.client_id)) for grant in shown),
        next_page=add_query(action, {"after": shown[-1].grant_id}) if len(grants) > PAGE_SIZE else None,
        notice=_DISCONNECTED if single(params, "disconnected") else None,
    ))


def _connection(grant: GrantInfo, client: Client | None) -> Connection:
    # A client described by a metadata document is not stored, and its
    # document is not fetched for this page: its URL's host names it.
    document_host = shown_host(grant.client_id) if is_metadata_url(grant.client_id) else None
    return Connection(
        grant_id=grant.grant_id,
        client_name=shown_name(client) if client is not None else grant.client_id,
        client_id=grant.client_id,
        destinations=tuple(dict.fromkeys(shown_host(u) for u in client.redirect_uris)) if client else (),
        described_by=document_host,
        scopes=grant.scope,
        authorized_at=grant.created_at,
        last_used_at=grant.last_used_at,
    )


def _answer_form(request: Request, ctx: Context) -> Flow[Response]:
    # CSRF, three layers: the session cookie is SameSite=Lax (another
    # site's form arrives without it), the form's token is derived from the
    # session, and another site's form says so in Origin.
    if not is_from_our_pages(request, ctx):
        raise BrowserError("Request refused", "This form did not come from the page we showed.", status=403)
    try:
        form = form_params(request)
    except OAuthError as exc:
        raise BrowserError("Invalid request", exc.description) from exc
    session = yield from connections_session.current(ctx, request)
    action = ctx.tenant.endpoint("connections")
    if session is None:
        return signed_out_page(action, "Your sign-in to this page has ended, so nothing was changed.", status=403)
    if not connections_session.is_form_token(ctx, session, single(form, "form_token")):
        raise BrowserError("Request refused", "This form did not come from the page we showed.", status=403)
    what = single(form, "action")
    if what == "sign_out":
        signed_out = yield from connections_session.end(ctx, session)
        return signed_out_page(action, "You are signed out of this page.", headers=(signed_out,))
    if what != "disconnect":
        raise BrowserError("Invalid request", "The form is incomplete.")
    grant_id = single(form, "grant_id")
    grant = (yield GetGrantInfo(ctx.tenant.slug, grant_id, ctx.now)) if grant_id is not None else None
    # The person's own grants only: another's is answered as one that does
    # not exist, saying nothing of it. (Whose a grant is never changes, so
    # this check and the revocation need not be one operation.)
    if grant is None or grant.user_id != session.user_id:
        raise BrowserError("Connection not found", "There is no such connection of yours; nothing was changed.",
                           status=404)
    # Every token of the grant stops working, on every replica (RevokeGrant
    # records the revocation that the others follow).
    yield RevokeGrant(ctx.tenant.slug, grant.grant_id)
    # "To have it back, it must ask you again" (the page says): the approval
    # a browser remembered would otherwise let it straight back in.
    yield from cookies.withdraw_approvals(ctx, grant.client_id)
    yield Audit("grant_revoked_by_user", ctx.tenant.slug, grant.client_id, grant.user_id,
                (("grant_id", grant.grant_id),))
    # RFC 9110 §15.4.4: 303 after a form POST, so a reload does not post again.
    return redirect(add_query(action, {"disconnected": "1"}), status=303)
