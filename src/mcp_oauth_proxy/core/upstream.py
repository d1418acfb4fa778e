"""Talking to the upstream identity provider, as pure functions: build the
requests a Fetch effect sends, and read what comes back."""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import quote, urlencode

import attrs

from .context import Context, from_urlsafe
from .effects import Flow, ResolveUpstream
from .errors import OAuthError, UpstreamUnavailable
from .http import HttpRequest, HttpResponse, parse_json
from .models import UpstreamTokens
from .tenant import Upstream

MAX_UPSTREAM_BODY = 1024 * 1024
# Microsoft Entra's multi-tenant issuer (common, organizations) is a template:
# each token's issuer has its own tenant's id in place of this.
TENANT_PLACEHOLDER = "{tenantid}"
_TENANT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class UpstreamRefused(OAuthError):
    """The upstream answered with an OAuth error (a 4xx, or GitHub's 200 with
    an ``error``): the grant or code is no good; the person must log in again."""

    error = "access_denied"
    status = 400


def with_upstream(ctx: Context) -> Flow[Context]:
    """The context with its tenant's upstream endpoints: as given, or asked
    for (ResolveUpstream: OIDC discovery, cached, outside the core). Raises
    UpstreamNotReady when they cannot be had."""
    if ctx.tenant.upstream is not None:
        return ctx
    upstream = yield ResolveUpstream(ctx.tenant.slug)
    return attrs.evolve(ctx, tenant=attrs.evolve(ctx.tenant, upstream=upstream))


def token_request(upstream: Upstream, params: dict[str, str]) -> HttpRequest:
    """A POST to the upstream token endpoint, authenticated as our client."""
    headers = [
        ("content-type", "application/x-www-form-urlencoded"),
        # GitHub answers form-encoded unless asked for JSON.
        ("accept", "application/json"),
    ]
    body = dict(params)
    if upstream.token_auth_method == "client_secret_basic":
        # RFC 6749 §2.3.1: each part form-urlencoded before base64.
        pair = f"{quote(upstream.client_id, safe='')}:{quote(upstream.client_secret, safe='')}"
        headers.append(("authorization", "Basic " + base64.b64encode(pair.encode()).decode()))
    else:
        body["client_id"] = upstream.client_id
        if upstream.client_secret:
            body["client_secret"] = upstream.client_secret
    return HttpRequest("POST", upstream.token_endpoint, tuple(headers), urlencode(body).encode(),
                       public_only=upstream.public_only)


def userinfo_request(upstream: Upstream, access_token: str) -> HttpRequest:
    assert upstream.userinfo_endpoint is not None
    return HttpRequest(
        "GET",
        upstream.userinfo_endpoint,
        (("authorization", f"Bearer {access_token}"), ("accept", "application/json")),
        public_only=upstream.public_only,
    )


def _json_object(response: HttpResponse) -> dict[str, Any]:
    if len(response.body) > MAX_UPSTREAM_BODY:
        raise UpstreamUnavailable("the identity provider's answer was too large")
    try:
        data = parse_json(response.body)
    except ValueError:
        raise UpstreamUnavailable("the identity provider gave an unreadable answer") from None
    if not isinstance(data, dict):
        raise UpstreamUnavailable("the identity provider gave an unreadable answer")
    return data


def parse_token_response(response: HttpResponse, now: int) -> tuple[UpstreamTokens, dict[str, Any]]:
    """The tokens of a successful token response, plus the whole document
    (for ``id_token``). Upstream error detail is never passed on."""
    if response.status >= 500:
        raise UpstreamUnavailable("the identity provider is unavailable")
    data = _json_object(response) if response.body else {}
    if response.status >= 400 or "error" in data:
        if response.status >= 400 and "error" not in data:
            raise UpstreamUnavailable("the identity provider gave an unexpected answer")
        raise UpstreamRefused("the identity provider refused the grant")
    if response.status != 200:
        raise UpstreamUnavailable("the identity provider gave an unexpected answer")
    access = data.get("access_token")
    if not isinstance(access, str) or not access:
        raise UpstreamUnavailable("the identity provider sent no access token")
    refresh = data.get("refresh_token")
    expires_in = data.get("expires_in")
    # ASCII digits only: str.isdigit() takes "²", which int() refuses.
    if isinstance(expires_in, str) and expires_in.isascii() and expires_in.isdigit() and len(expires_in) < 12:
        expires_in = int(expires_in)
    scope = data.get("scope")
    tokens = UpstreamTokens(
        access_token=access,
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        expires_at=now + expires_in if isinstance(expires_in, int) and expires_in > 0 else None,
        token_type=str(data.get("token_type") or "Bearer"),
        scope=scope if isinstance(scope, str) else None,
        issued_at=now,
    )
    return tokens, data


def parse_userinfo(response: HttpResponse) -> dict[str, Any]:
    if response.status != 200:
        raise UpstreamUnavailable("the identity provider did not return the user's profile")
    return _json_object(response)


def id_token_claims(id_token: str) -> dict[str, Any]:
    """The claims of an id_token received straight from the token endpoint
    over TLS (OIDC Core §3.1.3.7 item 6 allows TLS server validation in place
    of the signature check for this case)."""
    parts = id_token.split(".")
    if len(parts) != 3:
        raise UpstreamUnavailable("the identity provider sent a malformed id_token")
    try:
        payload = from_urlsafe(parts[1])
        claims = parse_json(payload)
    except ValueError:  # binascii.Error is one
        raise UpstreamUnavailable("the identity provider sent a malformed id_token") from None
    if not isinstance(claims, dict):
        raise UpstreamUnavailable("the identity provider sent a malformed id_token")
    return claims


def issuer_fits(expected: str, iss: str, tenant_id: str | None = None) -> bool:
    """Whether ``iss`` is the issuer expected. A template's placeholder
    stands for a tenant id: the token's own (its ``tid``) when given,
    else any (an authorization response's ``iss``, before there is a token)."""
    if TENANT_PLACEHOLDER not in expected:
        return iss == expected
    before, _, after = expected.partition(TENANT_PLACEHOLDER)
    if not (iss.startswith(before) and iss.endswith(after) and len(iss) > len(before) + len(after)):
        return False
    inside = iss[len(before):len(iss) - len(after)]
    return _TENANT_ID.fullmatch(inside) is not None and tenant_id in (None, inside)


def check_id_token(claims: dict[str, Any], upstream: Upstream, nonce: str | None, now: int) -> str:
    """OIDC Core §3.1.3.7: iss, aud, exp and nonce; returns ``sub``. A
    template issuer is filled with the token's ``tid``, which must be there
    (Microsoft identity platform: validating the issuer of multi-tenant apps)."""
    iss, tid = claims.get("iss"), claims.get("tid")
    if upstream.issuer is not None and not (isinstance(iss, str) and issuer_fits(
            upstream.issuer, iss, tid if isinstance(tid, str) else "")):
        raise UpstreamRefused("the id_token was issued by another identity provider")
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if upstream.client_id not in audiences:
        raise UpstreamRefused("the id_token is not meant for this client")
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or exp <= now:
        raise UpstreamRefused("the id_token has expired")
    if nonce is not None and claims.get("nonce") != nonce:
        raise UpstreamRefused("the id_token nonce does not match")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise UpstreamRefused("the id_token has no subject")
    return sub


def user_id_from(claims: dict[str, Any], claim: str) -> str:
    """The stable user id: OIDC ``sub``, GitHub's numeric ``id``; or several
    claims named with ``+`` (Entra's ``tid+oid``), their values joined with ``:``."""
    values = []
    for name in claim.split("+"):
        value = claims.get(name)
        if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
            raise UpstreamUnavailable(f"the identity provider's profile has no {name!r}")
        values.append(str(value))
    return ":".join(values)
