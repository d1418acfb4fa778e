"""The development identity provider (upstream ``kind = "dev"``): a sign-in
page that asks for a name and signs that person in, so a login can be tried
with no account anywhere. The tenant's own upstream client talks to it as to
any OAuth 2 provider (authorization code with PKCE, token, userinfo: RFC
6749 §4.1, RFC 7636), at ``/oauth/dev/…`` beside its other endpoints.

Nothing is stored: codes and tokens are signed with the cookie key and
expire. A name gives the same user id every time. It is served only where
the configuration allows it (loopback addresses and an http://127.0.0.1 or
http://localhost issuer, config.py), and every page says it is for
development."""

from __future__ import annotations

import hashlib
import hmac
import json
import unicodedata
from html import escape
from typing import Any

from ..context import Context, from_urlsafe, urlsafe
from ..errors import BrowserError, InvalidGrant, InvalidRequest
from ..http import Request, Response, add_query, form_params, json_response, query_params, redirect, single
from ..pages import render
from ..pkce import s256

CLIENT_ID = "dev"
CODE_TTL = 60
TOKEN_TTL = 3600
_BANNER = ('<p class="warn"><strong>Development sign-in.</strong> Anyone can sign in here as anyone: '
           "never use it where others can reach it.</p>")


def user_id(name: str) -> str:
    """The same id for the same name (case and spacing aside)."""
    folded = " ".join(name.split()).casefold()
    return "dev-" + hashlib.sha256(folded.encode("utf-8")).hexdigest()[:20]


def _sign(ctx: Context, purpose: str, claims: dict[str, Any]) -> str:
    body = urlsafe(json.dumps({**claims, "p": purpose}, separators=(",", ":")).encode("utf-8"))
    mac = urlsafe(hmac.new(ctx.cookie_key, b"dev-idp." + body.encode("ascii"), hashlib.sha256).digest())
    return f"{body}.{mac}"


def _opened(ctx: Context, purpose: str, value: str | None) -> dict[str, Any] | None:
    """The claims of a value we signed for ``purpose``, unexpired; else None."""
    if not value or value.count(".") != 1:
        return None
    body, mac = value.split(".")
    good = urlsafe(hmac.new(ctx.cookie_key, b"dev-idp." + body.encode("ascii", "replace"), hashlib.sha256).digest())
    if not hmac.compare_digest(mac.encode("ascii", "replace"), good.encode("ascii")):
        return None
    try:
        claims = json.loads(from_urlsafe(body))
    except ValueError:
        return None
    if not isinstance(claims, dict) or claims.get("p") != purpose or not isinstance(claims.get("exp"), int):
        return None
    return claims if claims["exp"] > ctx.now else None


def _callback(ctx: Context) -> str:
    return ctx.tenant.endpoint("callback")


def _name_problem(name: str) -> str | None:
    if not name or len(name) > 64:
        return "Give a name of 1 to 64 characters."
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in name):
        return "Give a name without control characters."
    return None


def _page(ctx: Context, request: Request, params: dict[str, str], problem: str | None = None) -> Response:
    hidden = "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in params.items())
    error = f'<p class="warn">{escape(problem)}</p>' if problem else ""
    content = f"""<h1>Sign in (development)</h1>
{_BANNER}
<p>Signing in to <strong>{escape(ctx.tenant.resource_name or ctx.tenant.issuer)}</strong>.
Any name will do; the same name is the same person next time.</p>
{error}
<form method="post" action="{escape(ctx.tenant.endpoint("dev/authorize"))}">
{hidden}
<p><label for="name">Your name</label><br>
<input id="name" name="name" autocomplete="username" maxlength="64" required autofocus></p>
<button type="submit">Sign in</button>
</form>"""
    return render("Sign in (development)", content, 400 if problem else 200)


def authorize(request: Request, ctx: Context) -> Response:
    """GET: the sign-in page for our own upstream client's request; POST:
    the name given, back to our callback with a code (RFC 6749 §4.1.2)."""
    raw = query_params(request) if request.method == "GET" else form_params(request)
    params = {k: single(raw, k) or "" for k in ("client_id", "redirect_uri", "state", "code_challenge",
                                                 "code_challenge_method", "response_type")}
    # Only the tenant's own upstream client, coming back to its own callback.
    if (params["client_id"] != CLIENT_ID or params["redirect_uri"] != _callback(ctx)
            or params["response_type"] != "code" or not params["state"]):
        raise BrowserError("Not a sign-in request", "This page signs in the development server's own logins only.")
    # Our own upstream client always sends one (RFC 7636 §4.2, S256).
    if not params["code_challenge"] or params["code_challenge_method"] != "S256":
        raise BrowserError("Not a sign-in request", "An S256 code challenge is required (RFC 7636 §4.2).")
    if request.method == "GET":
        return _page(ctx, request, params)
    name = " ".join((single(raw, "name") or "").split())
    problem = _name_problem(name)
    if problem:
        return _page(ctx, request, params, problem)
    # Bound to this tenant: tenants share the signing key.
    code = _sign(ctx, "code", {"name": name, "challenge": params["code_challenge"], "tenant": ctx.tenant.slug,
                               "exp": ctx.now + CODE_TTL})
    return redirect(add_query(params["redirect_uri"], {"code": code, "state": params["state"]}), status=303)


def token(request: Request, ctx: Context) -> Response:
    """The code for an access token (RFC 6749 §4.1.3), its PKCE verifier checked."""
    raw = form_params(request)
    if single(raw, "grant_type") != "authorization_code":
        raise InvalidRequest("grant_type must be authorization_code")
    claims = _opened(ctx, "code", single(raw, "code"))
    if claims is None or claims.get("tenant") != ctx.tenant.slug:
        raise InvalidGrant("the code is not valid or has expired")
    if single(raw, "redirect_uri") not in (None, _callback(ctx)):
        raise InvalidGrant("redirect_uri does not match")
    verifier = single(raw, "code_verifier")
    if verifier is None or not hmac.compare_digest(s256(verifier), claims["challenge"]):
        raise InvalidGrant("the code verifier does not match (RFC 7636 §4.6)")
    access = _sign(ctx, "token", {"name": claims["name"], "tenant": ctx.tenant.slug, "exp": ctx.now + TOKEN_TTL})
    return json_response({"access_token": access, "token_type": "Bearer", "expires_in": TOKEN_TTL})


def userinfo(request: Request, ctx: Context) -> Response:
    """Who the token's bearer is: a stable ``sub`` and the name given."""
    scheme, _, value = (request.header("authorization") or "").partition(" ")
    claims = _opened(ctx, "token", value.strip()) if scheme.lower() == "bearer" else None
    if claims is None or claims.get("tenant") != ctx.tenant.slug:
        return Response(401, (("www-authenticate", 'Bearer error="invalid_token"'),))
    name = claims["name"]
    return json_response({"sub": user_id(name), "name": name, "preferred_username": name})
