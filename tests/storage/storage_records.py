"""Records for the storage tests, with defaults so a test names only what
matters to it."""

from __future__ import annotations

from typing import Any

import attrs

from mcp_oauth_proxy.core.models import (
    AccessToken,
    AuthorizationRequest,
    AuthSession,
    Client,
    CodeGrant,
    ConnectionsSignIn,
    ConsentRequest,
    Grant,
    OAuthConfig,
    Organization,
    Redemption,
    RefreshToken,
    Server,
    UpstreamTokens,
)

T0 = 1_800_000_000
REQUEST = AuthorizationRequest(
    client_id="client-1", redirect_uri="http://127.0.0.1:5000/cb", redirect_uri_given=True, state="s",
    scope=("mcp", "mcp:admin"), resource="https://acme.example.com/mcp", code_challenge="c" * 43,
)


def client(tenant: str = "acme", client_id: str = "client-1", **kw: Any) -> Client:
    base: dict[str, Any] = dict(
        redirect_uris=("http://127.0.0.1:5000/cb", "https://app.example/cb"),
        token_endpoint_auth_method="client_secret_post", grant_types=("authorization_code", "refresh_token"),
        response_types=("code",), application_type="web", created_at=T0, client_name="Ünïcode app ✓",
        client_uri="https://app.example", scope="mcp", secret_hash="ab" * 32,
    )
    base.update(kw)
    return Client(tenant=tenant, client_id=client_id, **base)


def consent(tenant: str = "acme", id_hash: str = "consent-1", expires_at: int = T0 + 600) -> ConsentRequest:
    return ConsentRequest(tenant=tenant, id_hash=id_hash, request=REQUEST, browser_hash="b" * 64, expires_at=expires_at)


def session(tenant: str = "acme", state_hash: str = "state-1", expires_at: int = T0 + 600,
            request: AuthorizationRequest | ConnectionsSignIn = REQUEST) -> AuthSession:
    return AuthSession(tenant=tenant, state_hash=state_hash, request=request, browser_hash="c" * 64,
                       upstream_issuer="https://idp.example",
                       upstream_code_verifier="the-upstream-verifier", nonce="n-1", expires_at=expires_at)


def grant(tenant: str = "acme", grant_id: str = "grant-1", code_hash: str | None = None, **kw: Any) -> Grant:
    base: dict[str, Any] = dict(
        client_id="client-1", user_id="user-42", scope=("mcp",), resource="https://acme.example.com/mcp",
        claims={"sub": "user-42", "email": "ada@example.org", "groups": ["a", "b"]},
        upstream=UpstreamTokens("up-at", "up-rt", T0 + 3600, "Bearer", "openid", T0), created_at=T0,
        expires_at=T0 + 86400,
    )
    base.update(kw)
    return Grant(tenant=tenant, grant_id=grant_id, code_hash=code_hash or f"code-of-{grant_id}", **base)


def code(g: Grant, expires_at: int = T0 + 60) -> CodeGrant:
    return CodeGrant(
        tenant=g.tenant, code_hash=g.code_hash, grant_id=g.grant_id, client_id=g.client_id, user_id=g.user_id,
        redirect_uri="http://127.0.0.1:5000/cb", redirect_uri_given=False, code_challenge="c" * 43,
        scope=g.scope, resource=g.resource, expires_at=expires_at,
    )


def access(g: Grant, token_hash: str, expires_at: int = T0 + 3600) -> AccessToken:
    return AccessToken(tenant=g.tenant, token_hash=token_hash, grant_id=g.grant_id, client_id=g.client_id,
                       user_id=g.user_id, scope=g.scope, resource=g.resource, issued_at=T0, expires_at=expires_at)


def refresh(g: Grant, token_hash: str, expires_at: int = T0 + 86400) -> RefreshToken:
    return RefreshToken(tenant=g.tenant, token_hash=token_hash, grant_id=g.grant_id, client_id=g.client_id,
                        user_id=g.user_id, scope=g.scope, resource=g.resource, issued_at=T0, expires_at=expires_at)


def issue(store: Any, g: Grant, at: AccessToken, rt: RefreshToken | None = None) -> bool:
    """Store tokens of the grant as the code grant does: the grant saved with
    a code of its own for them (named after ``at``), and that code redeemed.
    Whether they were stored."""
    c = attrs.evolve(code(g), code_hash=f"code-for-{at.token_hash}")
    store.save_grant_and_code(g, c)
    return store.redeem_code(g.tenant, c.code_hash, T0, at, rt, keep_client=False) is Redemption.ISSUED


def with_tokens(store: Any, g: Grant, n: str = "1") -> tuple[AccessToken, RefreshToken]:
    """Save the grant and its code, and issue one token pair (its code left unspent)."""
    store.save_grant_and_code(g, code(g))
    pair = access(g, f"at-{g.grant_id}-{n}"), refresh(g, f"rt-{g.grant_id}-{n}")
    assert issue(store, g, *pair)
    return pair


# -- the directory --------------------------------------------------------------
SECRET = "s3cret-of-the-upstream-client"


def org(name: str = "acme-corp", display_name: str = "Acme Corp") -> Organization:
    return Organization(name, display_name, T0)


def config(name: str = "idp", organization: str = "acme-corp", **kw: Any) -> OAuthConfig:
    base: dict[str, Any] = dict(kind="oidc", client_id="cid", client_secret=SECRET, issuer="https://idp.example",
                                scopes=("openid", "email"), updated_at=T0)
    base.update(kw)
    return OAuthConfig(organization=organization, name=name, **base)


def server(slug: str = "acme", oauth_config: str = "idp", organization: str = "acme-corp", **kw: Any) -> Server:
    base: dict[str, Any] = dict(issuer=f"https://{slug}.example", resource=f"https://{slug}.example/mcp",
                                scopes=("mcp", "mcp:admin"), required_scopes=("mcp",),
                                policy={"access_token_ttl": 600}, updated_at=T0)
    base.update(kw)
    return Server(slug=slug, organization=organization, oauth_config=oauth_config, **base)
