"""Token introspection (RFC 7662), for resource servers of the tenant and
for clients asking about their own tokens."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import ratelimit
from ..client_auth import authenticate, check_secret, credentials
from ..context import ACCESS_PREFIX, REFRESH_PREFIX, Context, token_hash
from ..effects import Flow, GetAccessToken, GetRefreshToken
from ..errors import InvalidClient
from ..http import Request, Response, form_params, json_response, required
from ..models import AccessToken


def _caller(request: Request, form: Mapping[str, list[str]], ctx: Context) -> Flow[str | None]:
    """None for a configured resource server (may see any token), else the
    id of the authenticated client (may see its own tokens). Every caller
    but a resource server is counted per address, failed attempts too."""
    creds = credentials(request, form)
    server = next((s for s in ctx.tenant.resource_servers if s.client_id == creds.client_id), None)
    if server is not None and creds.method != "none" and check_secret(creds.secret, server.secret_sha256):
        return None
    yield from ratelimit.by_address(ctx, "introspect", request.remote_addr)
    if server is not None:
        raise InvalidClient("resource server authentication failed")
    if creds.method == "none":
        raise InvalidClient("introspection needs client credentials")
    client = yield from authenticate(request, form, ctx)
    return client.client_id


def introspect(request: Request, ctx: Context) -> Flow[Response]:
    form = form_params(request)
    caller = yield from _caller(request, form, ctx)
    value = required(form, "token")
    digest = token_hash(value)
    record: Any = None
    kind = None
    if value.startswith(ACCESS_PREFIX):
        record, kind = (yield GetAccessToken(ctx.tenant.slug, digest)), "access_token"
    elif value.startswith(REFRESH_PREFIX):
        record, kind = (yield GetRefreshToken(ctx.tenant.slug, digest)), "refresh_token"
        if record is not None and record.rotated_at is not None:
            record = None
    inactive = (
        record is None
        or record.expires_at < ctx.now  # good through its last second, as at the guard
        or (caller is not None and record.client_id != caller)
    )
    if inactive:
        # RFC 7662 §2.2: nothing more than active=false for such a token.
        return json_response({"active": False})
    # Whom the token acts for (an extension member, RFC 7662 §2.2): a client
    # for itself, or a person; only a browser login's grants refresh.
    principal_type = record.principal.principal_type if isinstance(record, AccessToken) else "user"
    return json_response(
        {
            "active": True,
            "client_id": record.client_id,
            "scope": " ".join(record.scope),
            "exp": record.expires_at,
            "iat": record.issued_at,
            "sub": record.user_id,
            "aud": record.resource,
            "iss": ctx.tenant.issuer,
            "token_type": "Bearer" if kind == "access_token" else kind,
            "principal_type": principal_type,
        }
    )
