"""The HTML pages a person sees: consent and errors (and the layout the
connections pages share, connections_page.py).

Every value is escaped; the pages need no JavaScript, and their headers
forbid framing (clickjacking, RFC 9700 §4.16) and caching.
"""

from __future__ import annotations

from html import escape
from string import Template

import attrs

from .http import Response

PAGE_HEADERS = (
    ("content-type", "text/html; charset=utf-8"),
    ("content-security-policy",
     "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
    ("pragma", "no-cache"),
)

_LAYOUT = Template(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#1b1b1b}
h1,h2{overflow-wrap:anywhere}
.host{font-family:ui-monospace,monospace;font-size:1.1rem;background:#f3f3f3;padding:.1rem .3rem}
.warn{background:#fff4e5;border-left:4px solid #e69500;padding:.5rem .75rem}
button{font-size:1rem;padding:.5rem 1.25rem;margin-right:.5rem}
.notice{background:#e8f5e9;border-left:4px solid #2e7d32;padding:.5rem .75rem}
.connections{list-style:none;padding:0}
.connection{border:1px solid #d0d0d0;border-radius:.4rem;padding:0 1rem 1rem;margin:1rem 0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}
dd{margin:0;overflow-wrap:anywhere}
</style></head>
<body>
$content
</body></html>
"""
)


def render(title: str, content: str, status: int = 200, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    body = _LAYOUT.substitute(title=escape(title), content=content).encode("utf-8")
    return Response(status, PAGE_HEADERS + headers, body)


def error_page(title: str, detail: str, status: int = 400, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    content = f"<h1>{escape(title)}</h1>\n<p>{escape(detail)}</p>"
    return render(title, content, status, headers)


def refused_request_page(detail: str, location: str, host: str) -> Response:
    """An authorization request refused, for a client whose redirect URI
    is not trusted yet: what went wrong, and a link back that the person
    follows or not (RFC 9700 §4.11.2)."""
    content = (f"<h1>The application's request was refused</h1>\n<p>{escape(detail)}</p>\n"
               f'<p><a href="{escape(location)}">Go back to {escape(host)}</a></p>')
    return render("Request refused", content, 400)


@attrs.frozen
class ConsentView:
    """What the consent page shows (MCP security best practices: client
    name, redirect host, scopes)."""

    action: str
    request_id: str
    client_name: str
    client_id: str
    redirect_host: str
    scopes: tuple[str, ...]
    upstream_scopes: tuple[str, ...]
    service: str
    localhost_only: bool
    # The person's connections page (flows/connections.py).
    connections: str
    # For a client identified by a metadata document: the host serving it.
    client_host: str | None = None


def consent_page(view: ConsentView, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    scopes = "".join(f"<li>{escape(s)}</li>" for s in view.scopes) or "<li>(none)</li>"
    upstream = ", ".join(escape(s) for s in view.upstream_scopes) or "(none)"
    warning = (
        '<p class="warn">This application only redirects to this computer (localhost). '
        "Approve only if you just started it yourself.</p>"
        if view.localhost_only
        else ""
    )
    vouched = (
        f'<p>This application is described by <span class="host">{escape(view.client_host)}</span>.</p>'
        if view.client_host
        else ""
    )
    connections = f'<a href="{escape(view.connections)}">your connections</a>'
    content = f"""<h1>Allow {escape(view.client_name)}?</h1>
<p><strong>{escape(view.client_name)}</strong> wants to use <strong>{escape(view.service)}</strong> on your behalf.</p>
{vouched}
<p>After you approve, you will be sent back to: <span class="host">{escape(view.redirect_host)}</span></p>
{warning}
<p>It asks for:</p>
<ul>{scopes}</ul>
<p>You will sign in with your identity provider, which will be asked for: {upstream}.</p>
<p><small>Client id: {escape(view.client_id)}</small></p>
<form method="post" action="{escape(view.action)}">
<input type="hidden" name="request_id" value="{escape(view.request_id)}">
<button type="submit" name="decision" value="approve">Approve</button>
<button type="submit" name="decision" value="deny">Deny</button>
</form>
<p><small>See and disconnect the applications you allowed: {connections}.</small></p>"""
    return render(f"Allow {view.client_name}?", content, 200, headers)
