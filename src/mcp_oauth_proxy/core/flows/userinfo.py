"""Userinfo: the upstream's profile of the person behind a proxy access
token, or the claims kept from login when the upstream cannot answer."""

from __future__ import annotations

from typing import Any

from ..context import Context
from ..effects import Fetch, Flow
from ..errors import FetchFailed, InvalidToken, OAuthError
from ..http import Request, Response, json_response
from ..upstream import parse_userinfo, userinfo_request
from .guard import authenticate_bearer, denial
from .upstream_token import fresh_upstream_token, load_grant


def userinfo(request: Request, ctx: Context) -> Flow[Response]:
    try:
        principal = yield from authenticate_bearer(request, ctx)
    except InvalidToken as exc:
        return denial(ctx.tenant, exc, ())
    if principal is None:
        return denial(ctx.tenant, None, ())
    if principal.principal_type == "client":
        # OIDC Core §5.3: claims about the End-User; a client acting for
        # itself has none (its id must not pass for a person's).
        return json_response({"error": "invalid_token",
                              "error_description": "the token is a client's own, not a person's"}, 401,
                             [("www-authenticate", 'Bearer error="invalid_token"')])
    claims: dict[str, Any] | None = None
    if ctx.upstream.userinfo_endpoint is not None:
        try:
            access = yield from fresh_upstream_token(principal.grant_id, ctx)
            claims = parse_userinfo((yield Fetch(userinfo_request(ctx.upstream, access), "userinfo")))
        except InvalidToken as exc:
            return denial(ctx.tenant, exc, ())
        except (OAuthError, FetchFailed):
            claims = None  # fall back to what login kept
    if claims is None:
        try:
            grant = yield from load_grant(principal.grant_id, ctx)
        except InvalidToken as exc:
            return denial(ctx.tenant, exc, ())
        claims = dict(grant.claims)
    # ``sub`` is always our stable user id (GitHub's profile has none).
    return json_response({**claims, "sub": principal.user_id})
