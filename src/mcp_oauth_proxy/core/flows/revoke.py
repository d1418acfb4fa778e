"""Token revocation (RFC 7009)."""

from __future__ import annotations

from ..client_auth import authenticated_id
from ..context import ACCESS_PREFIX, REFRESH_PREFIX, Context, token_hash
from ..effects import Audit, Flow, GetAccessToken, GetRefreshToken, RevokeAccessToken, RevokeGrant
from ..http import Request, Response, form_params, required


def revoke(request: Request, ctx: Context) -> Flow[Response]:
    form = form_params(request)
    client_id = yield from authenticated_id(request, form, ctx)
    value = required(form, "token")
    # token_type_hint only orders the look-ups (RFC 7009 §2.1); our prefixes decide.
    digest = token_hash(value)
    tenant = ctx.tenant.slug
    if value.startswith(REFRESH_PREFIX):
        refresh = yield GetRefreshToken(tenant, digest)
        # Revoking a refresh token revokes its whole grant (RFC 7009 §2.1 SHOULD).
        if refresh is not None and refresh.client_id == client_id:
            yield RevokeGrant(tenant, refresh.grant_id)
            yield Audit("grant_revoked", tenant, client_id, refresh.user_id, (("grant_id", refresh.grant_id),))
    elif value.startswith(ACCESS_PREFIX):
        access = yield GetAccessToken(tenant, digest)
        if access is not None and access.client_id == client_id:
            yield RevokeAccessToken(tenant, digest)
            yield Audit("access_token_revoked", tenant, client_id, access.user_id, (("grant_id", access.grant_id),))
    # RFC 7009 §2.2: 200 whether or not the token was known; a token of
    # another client is left alone and reported the same way.
    return Response(200, (("cache-control", "no-store"),))
