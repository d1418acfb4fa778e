"""The token endpoint's grants without a browser, for clients an operator
registered for them: client credentials (RFC 6749 §4.4), where the client
acts for itself, and the jwt-bearer grant (RFC 7523 §2.1) of an Identity
Assertion JWT Authorization Grant (ID-JAG, SEP-990), where it acts for the
person the company's identity provider vouches for. Neither issues a
refresh token: the client asks again (a fresh ID-JAG, RFC 6749 §4.4.3)."""

from __future__ import annotations

from collections.abc import Mapping

from ..context import ACCESS_PREFIX, Context, token_hash
from ..effects import Audit, Flow, SaveGrantAndToken
from ..errors import (
    InvalidGrant,
    InvalidScope,
    TemporarilyUnavailable,
    UnauthorizedClient,
    UpstreamNotReady,
)
from ..http import required, single
from ..jwt_checks import IdJag, JwtRefused, check_id_jag, read, spend_jti, verified
from ..models import CLIENT_CREDENTIALS, JWT_BEARER, AccessToken, Client, Grant
from ..scopes import check_resource, choose_scope, parse_scope
from ..tenant import UPSTREAM_ISSUER
from ..upstream import with_upstream
from ..user_ids import CLIENT_PREFIX, person_id_problem

# The user id a client acting for itself has (Principal.principal_type says
# "client" all the same: that, not this prefix, is what tells).
CLIENT_USER_PREFIX = CLIENT_PREFIX


def _allowed(client: Client, ctx: Context) -> tuple[str, ...]:
    """The scopes a client may be given: its registration's, or all the tenant's."""
    return parse_scope(client.scope) if client.scope else ctx.tenant.scopes


def _permitted(client: Client, grant_type: str) -> None:
    # RFC 6749 §4.4: confidential clients only; §5.2: a grant the client is
    # not registered for is unauthorized_client.
    if client.is_public or grant_type not in client.grant_types:
        raise UnauthorizedClient(f"the client is not registered for the {grant_type} grant")


def _issue(ctx: Context, client: Client, user_id: str, scope: tuple[str, ...], grant_type: str,
           claims: dict[str, str]) -> Flow[tuple[str, AccessToken]]:
    """A grant of its own for one access token, stored together."""
    value = ctx.token(ACCESS_PREFIX)
    grant_id = ctx.new_id()
    expires_at = ctx.now + ctx.tenant.policy.access_token_ttl
    access = AccessToken(tenant=ctx.tenant.slug, token_hash=token_hash(value), grant_id=grant_id,
                         client_id=client.client_id, user_id=user_id, scope=scope, resource=ctx.tenant.resource,
                         issued_at=ctx.now, expires_at=expires_at, grant_type=grant_type)
    grant = Grant(tenant=ctx.tenant.slug, grant_id=grant_id, client_id=client.client_id, user_id=user_id,
                  scope=scope, resource=ctx.tenant.resource, code_hash=None, claims=claims, upstream=None,
                  created_at=ctx.now, expires_at=expires_at)
    yield SaveGrantAndToken(grant, access)
    return value, access


def client_credentials_grant(form: Mapping[str, list[str]], client: Client,
                             ctx: Context) -> Flow[tuple[str, AccessToken]]:
    """RFC 6749 §4.4.2: the client, authenticated, gets a token for itself."""
    _permitted(client, CLIENT_CREDENTIALS)
    # RFC 8707 §2: a resource must be ours.
    check_resource(form.get("resource"), ctx.tenant.resource)
    allowed = _allowed(client, ctx)
    scope = choose_scope(parse_scope(single(form, "scope")), allowed, allowed)
    value, access = yield from _issue(ctx, client, CLIENT_USER_PREFIX + client.client_id, scope, CLIENT_CREDENTIALS,
                                      {})
    yield Audit("tokens_issued", ctx.tenant.slug, client.client_id, access.user_id,
                (("grant_id", access.grant_id), ("grant_type", CLIENT_CREDENTIALS)))
    return value, access


def _trusted_issuers(ctx: Context) -> Flow[tuple[tuple[str, ...], str | None]]:
    """The ID-JAG issuers the tenant trusts, and its upstream's issuer
    among them (resolved only when the tenant trusts it)."""
    listed = ctx.tenant.id_jag_issuers
    upstream_issuer = None
    if UPSTREAM_ISSUER in listed:
        try:
            upstream_issuer = (yield from with_upstream(ctx)).upstream.issuer
        except UpstreamNotReady:
            raise TemporarilyUnavailable("the identity provider is not available at the moment; try again later",
                                         headers=(("retry-after", "30"),)) from None
    trusted = tuple(i for i in listed if i != UPSTREAM_ISSUER) + ((upstream_issuer,) if upstream_issuer else ())
    return trusted, upstream_issuer


def user_id_of(id_jag: IdJag, upstream_issuer: str | None) -> str:
    """The person an ID-JAG names: as a browser login through the tenant's
    upstream names them (its ``sub``) when the upstream issued it; else
    qualified by its issuer, so that no issuer can name another's people."""
    if id_jag.issuer == upstream_issuer:
        # The same id a browser login gives, with the same limits.
        problem = person_id_problem(id_jag.subject)
        if problem is not None:
            raise InvalidGrant(f"the assertion's sub cannot name a person here ({problem})")
        return id_jag.subject
    return f"{id_jag.issuer}#{id_jag.subject}"


def jwt_bearer_grant(form: Mapping[str, list[str]], client: Client, ctx: Context) -> Flow[tuple[str, AccessToken]]:
    """RFC 7523 §2.1 with an ID-JAG as the assertion (SEP-990,
    draft-ietf-oauth-identity-assertion-authz-grant §5): a token for the
    person it names, as if they had signed in."""
    _permitted(client, JWT_BEARER)
    check_resource(form.get("resource"), ctx.tenant.resource)
    try:
        assertion = read(required(form, "assertion"))
        trusted, upstream_issuer = yield from _trusted_issuers(ctx)
        # Checked before anything is fetched: no one makes us look up an issuer we do not trust.
        issuer = assertion.claims.get("iss")
        if not isinstance(issuer, str) or issuer not in trusted:
            raise JwtRefused("the ID-JAG's issuer is not trusted by this server")
        claims = yield from verified(assertion, issuer, discover=True, public_only=ctx.tenant.fetches_public_only)
        id_jag, jti, exp = check_id_jag(assertion, claims, issuer=ctx.tenant.issuer, client_id=client.client_id,
                                        resource=ctx.tenant.resource, now=ctx.now)
    except JwtRefused as exc:
        # RFC 7523 §3.1: a JWT that is not valid is invalid_grant.
        raise InvalidGrant(str(exc)) from None
    allowed = _allowed(client, ctx)
    if id_jag.scope is not None:
        # What the identity provider granted bounds what the client may have.
        allowed = tuple(s for s in allowed if s in id_jag.scope)
    try:
        scope = choose_scope(parse_scope(single(form, "scope")), allowed, allowed)
    except InvalidScope as exc:
        raise InvalidScope(exc.description + " (not granted by the ID-JAG, or not allowed to the client)") from None
    if not scope:
        raise InvalidScope("the ID-JAG grants none of the scopes this client may have")
    try:
        yield from spend_jti(ctx.tenant.slug, "id-jag", issuer, jti, exp)
    except JwtRefused as exc:
        raise InvalidGrant(str(exc)) from None
    user_id = user_id_of(id_jag, upstream_issuer)
    value, access = yield from _issue(ctx, client, user_id, scope, JWT_BEARER,
                                      {"iss": id_jag.issuer, "sub": id_jag.subject})
    # The same events as a login through the browser, and a token issued.
    detail = (("grant_id", access.grant_id), ("grant_type", JWT_BEARER), ("issuer", issuer))
    yield Audit("login_completed", ctx.tenant.slug, client.client_id, user_id, detail)
    yield Audit("tokens_issued", ctx.tenant.slug, client.client_id, user_id, detail[:2])
    return value, access
