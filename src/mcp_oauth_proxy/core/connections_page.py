"""The connections page (flows/connections.py) and the page a person sees
once signed out of it. Like every page of ours (pages.py): each value
escaped, no JavaScript, plain forms, no framing, no caching."""

from __future__ import annotations

from html import escape

import attrs

from .dates import utc_minute
from .http import Response
from .pages import render


@attrs.frozen
class Connection:
    """One grant as the page shows it."""

    grant_id: str
    client_name: str
    client_id: str
    # Where the application sends the person (its redirect hosts); for one
    # described by a metadata document, the document's host instead.
    destinations: tuple[str, ...]
    described_by: str | None
    scopes: tuple[str, ...]
    authorized_at: int
    # When its newest token was issued; None: none yet.
    last_used_at: int | None = None


@attrs.frozen
class ConnectionsView:
    action: str
    # The CSRF token every form of the page carries (connections_session.form_token).
    form_token: str
    service: str
    user_id: str
    connections: tuple[Connection, ...]
    # The next page of the list, if there is one.
    next_page: str | None = None
    notice: str | None = None


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{name}" value="{escape(value)}">'


def _connection(view: ConnectionsView, item: Connection) -> str:
    name = escape(item.client_name)
    where = (f'described by <span class="host">{escape(item.described_by)}</span>' if item.described_by
             else ", ".join(f'<span class="host">{escape(d)}</span>' for d in item.destinations) or "(none)")
    scopes = ", ".join(escape(s) for s in item.scopes) or "(none)"
    return f"""<li class="connection">
<h2>{name}</h2>
<dl>
<dt>Sends you to</dt><dd>{where}</dd>
<dt>Can use</dt><dd>{scopes}</dd>
<dt>Authorized</dt><dd>{utc_minute(item.authorized_at)}</dd>
<dt>Last used</dt><dd>{utc_minute(item.last_used_at) if item.last_used_at else "not yet"}</dd>
<dt>Client id</dt><dd><small>{escape(item.client_id)}</small></dd>
</dl>
<form method="post" action="{escape(view.action)}">
{_hidden("form_token", view.form_token)}
{_hidden("grant_id", item.grant_id)}
<button type="submit" name="action" value="disconnect" aria-label="Disconnect {name}">Disconnect</button>
</form>
</li>"""


def connections_page(view: ConnectionsView) -> Response:
    notice = f'<p class="notice" role="status">{escape(view.notice)}</p>' if view.notice else ""
    if view.connections:
        listed = "<ul class=\"connections\">\n" + "\n".join(_connection(view, c) for c in view.connections) + "\n</ul>"
    else:
        listed = "<p>You have not connected any application.</p>"
    more = f'<p><a href="{escape(view.next_page)}">More connections</a></p>' if view.next_page else ""
    content = f"""<h1>Your connections</h1>
{notice}
<p>The applications you allowed to use <strong>{escape(view.service)}</strong> on your behalf.
Disconnect one and it loses its access at once; to have it back, it must ask you again.</p>
{listed}
{more}
<form method="post" action="{escape(view.action)}">
<p>Signed in as <span class="host">{escape(view.user_id)}</span>.
{_hidden("form_token", view.form_token)}
<button type="submit" name="action" value="sign_out">Sign out</button></p>
</form>"""
    return render("Your connections", content)


def signed_out_page(action: str, detail: str, status: int = 200,
                    headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """Said after signing out, or to a form posted once the sign-in has
    ended: a link to sign in again, never a sign-in started at once."""
    content = f"""<h1>Signed out</h1>
<p>{escape(detail)}</p>
<p><a href="{escape(action)}">Sign in again</a> to see your connections.</p>"""
    return render("Signed out", content, status, headers)
