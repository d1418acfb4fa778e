"""The token endpoint: authorization_code and refresh_token grants, and
those without a browser (machine_grants.py)."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from .. import ratelimit
from ..client_auth import authenticate
from ..context import ACCESS_PREFIX, REFRESH_PREFIX, Context, token_hash
from ..effects import (
    Audit,
    Flow,
    GetCode,
    GetRefreshToken,
    RedeemCode,
    RevokeGrantOfCode,
    RotateRefreshToken,
    TakeCode,
)
from ..errors import InvalidGrant, InvalidScope, InvalidTarget, OAuthError, UnauthorizedClient, UnsupportedGrantType
from ..http import Request, Response, form_params, json_response, required, single
from ..models import (
    CLIENT_CREDENTIALS,
    JWT_BEARER,
    AccessToken,
    Client,
    CodeGrant,
    Redemption,
    RefreshToken,
    Rotation,
)
from ..pkce import check_verifier
from ..scopes import check_resource, normalize_resource, parse_scope
from .machine_grants import client_credentials_grant, jwt_bearer_grant


def _new_tokens(
    ctx: Context, client: Client, grant_id: str, user_id: str, scope: tuple[str, ...], resource: str,
    refresh_scope: tuple[str, ...], refresh_expires_at: int,
) -> tuple[str, AccessToken, str | None, RefreshToken | None]:
    policy = ctx.tenant.policy
    access_value = ctx.token(ACCESS_PREFIX)
    access = AccessToken(
        tenant=ctx.tenant.slug,
        token_hash=token_hash(access_value),
        grant_id=grant_id,
        client_id=client.client_id,
        user_id=user_id,
        scope=scope,
        resource=resource,
        issued_at=ctx.now,
        expires_at=ctx.now + policy.access_token_ttl,
    )
    if "refresh_token" not in client.grant_types:
        return access_value, access, None, None
    refresh_value = ctx.token(REFRESH_PREFIX)
    refresh = RefreshToken(
        tenant=ctx.tenant.slug,
        token_hash=token_hash(refresh_value),
        grant_id=grant_id,
        client_id=client.client_id,
        user_id=user_id,
        scope=refresh_scope,
        resource=resource,
        issued_at=ctx.now,
        expires_at=refresh_expires_at,
    )
    return access_value, access, refresh_value, refresh


def _token_response(ctx: Context, access_value: str, access: AccessToken, refresh_value: str | None) -> Response:
    body = {
        "access_token": access_value,
        "token_type": "Bearer",
        "expires_in": access.expires_at - access.issued_at,
        "scope": " ".join(access.scope),
    }
    if refresh_value is not None:
        body["refresh_token"] = refresh_value
    # RFC 6749 §5.1: Cache-Control: no-store (json_response adds it).
    return json_response(body)


def _check_resource_matches(form: Mapping[str, list[str]], bound: str, ctx: Context) -> None:
    """RFC 8707 §2.2: a resource at the token endpoint must be ours and the
    one the grant is bound to."""
    if form.get("resource"):
        check_resource(form["resource"], ctx.tenant.resource)
        if any(normalize_resource(r) != normalize_resource(bound) for r in form["resource"] if r):
            raise InvalidTarget("resource differs from the one authorized")


def _check_redemption(form: Mapping[str, list[str]], client: Client, grant: CodeGrant, ctx: Context) -> None:
    if grant.client_id != client.client_id:
        raise InvalidGrant("the code was issued to another client")
    redirect_uri = single(form, "redirect_uri")
    # RFC 6749 §4.1.3: required if it was in the authorization request, and identical.
    if (grant.redirect_uri_given or redirect_uri is not None) and redirect_uri != grant.redirect_uri:
        raise InvalidGrant("redirect_uri does not match the authorization request")
    check_verifier(single(form, "code_verifier"), grant.code_challenge)
    _check_resource_matches(form, grant.resource, ctx)


def _replayed(ctx: Context, client: Client, code_hash: str) -> Flow[Response]:
    # RFC 6749 §4.1.2: a code used twice revokes what was issued from it.
    revoked = yield RevokeGrantOfCode(ctx.tenant.slug, code_hash)
    if revoked:
        yield Audit("code_replay_grant_revoked", ctx.tenant.slug, client.client_id)
    raise InvalidGrant("the code is unknown, expired or already used")


def authorization_code_grant(form: Mapping[str, list[str]], client: Client, ctx: Context) -> Flow[Response]:
    code_hash = token_hash(required(form, "code"))
    grant = yield GetCode(ctx.tenant.slug, code_hash, ctx.now)
    if grant is None:
        return (yield from _replayed(ctx, client, code_hash))
    try:
        _check_redemption(form, client, grant, ctx)
    except OAuthError:
        # A refused attempt spends the code all the same: whoever holds it
        # gets one try (another client's, or one without the verifier).
        yield TakeCode(ctx.tenant.slug, code_hash, ctx.now)
        raise
    refresh_expires = ctx.now + ctx.tenant.policy.refresh_token_ttl
    access_value, access, refresh_value, refresh = _new_tokens(
        ctx, client, grant.grant_id, grant.user_id, grant.scope, grant.resource, grant.scope, refresh_expires
    )
    issued = Audit("tokens_issued", ctx.tenant.slug, client.client_id, grant.user_id, (("grant_id", grant.grant_id),))
    # One transaction: a failure in it leaves the code good for a retry.
    outcome = yield RedeemCode(ctx.tenant.slug, code_hash, ctx.now, access, refresh,
                               keep_client=client.expires_at is not None, event=issued.at(ctx.now))
    if outcome is Redemption.SPENT:  # another request redeemed it first
        return (yield from _replayed(ctx, client, code_hash))
    if outcome is not Redemption.ISSUED:
        raise InvalidGrant("the grant was revoked")
    yield attrs.evolve(issued, kept=True)  # logged; the redemption kept it
    return _token_response(ctx, access_value, access, refresh_value)


def refresh_token_grant(form: Mapping[str, list[str]], client: Client, ctx: Context) -> Flow[Response]:
    if "refresh_token" not in client.grant_types:
        raise UnauthorizedClient("the client is not registered for the refresh_token grant")
    value = required(form, "refresh_token")
    old_hash = token_hash(value)
    old = yield GetRefreshToken(ctx.tenant.slug, old_hash)
    if old is None or old.expires_at <= ctx.now:
        raise InvalidGrant("the refresh token is unknown, expired or revoked")
    # OAuth 2.1 §4.3.1: the refresh token is bound to the client it was issued to.
    if old.client_id != client.client_id:
        raise InvalidGrant("the refresh token was issued to another client")
    # Counted per grant, not per client: another grant of the same client
    # (another person using the same application) keeps its own budget.
    yield from ratelimit.by_grant(ctx, "token", old.grant_id)
    # RFC 6749 §6: the scope may narrow, never widen.
    scope = parse_scope(single(form, "scope")) or old.scope
    wider = [s for s in scope if s not in old.scope]
    if wider:
        raise InvalidScope("scope exceeds the original grant: " + " ".join(wider))
    _check_resource_matches(form, old.resource, ctx)
    access_value, access, refresh_value, refresh = _new_tokens(
        ctx, client, old.grant_id, old.user_id, scope, old.resource, old.scope, old.expires_at
    )
    assert refresh is not None
    refreshed = Audit("tokens_refreshed", ctx.tenant.slug, client.client_id, old.user_id,
                      (("grant_id", old.grant_id),))
    outcome = yield RotateRefreshToken(
        ctx.tenant.slug, old_hash, ctx.now, ctx.tenant.policy.refresh_grace, access, refresh, refreshed.at(ctx.now)
    )
    if outcome is Rotation.REUSED:
        # RFC 9700 §4.14.2: reuse of a rotated token revokes the family.
        yield Audit("refresh_reuse_grant_revoked", ctx.tenant.slug, client.client_id, old.user_id,
                    (("grant_id", old.grant_id),))
        raise InvalidGrant("the refresh token was already used; the grant has been revoked")
    if outcome is not Rotation.ROTATED:
        raise InvalidGrant("the refresh token is unknown, expired or revoked")
    yield attrs.evolve(refreshed, kept=True)  # logged; the rotation kept it
    return _token_response(ctx, access_value, access, refresh_value)


def token(request: Request, ctx: Context) -> Flow[Response]:
    form = form_params(request)
    client = yield from authenticate(request, form, ctx)
    grant_type = required(form, "grant_type")
    if grant_type == "authorization_code":
        yield from ratelimit.by_client(ctx, "token", client.client_id, request.remote_addr)
        return (yield from authorization_code_grant(form, client, ctx))
    if grant_type == "refresh_token":
        return (yield from refresh_token_grant(form, client, ctx))
    if grant_type == CLIENT_CREDENTIALS or (grant_type == JWT_BEARER and ctx.tenant.id_jag_issuers):
        yield from ratelimit.by_client(ctx, "token", client.client_id, request.remote_addr)
        machine_grant = client_credentials_grant if grant_type == CLIENT_CREDENTIALS else jwt_bearer_grant
        access_value, access = yield from machine_grant(form, client, ctx)
        return _token_response(ctx, access_value, access, None)
    raise UnsupportedGrantType(f"grant_type {grant_type!r} is not supported")

