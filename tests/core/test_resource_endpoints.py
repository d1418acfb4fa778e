"""The guard of the protected resource (RFC 6750, RFC 9728 §5, RFC 8707),
userinfo, revocation (RFC 7009) and introspection (RFC 7662)."""

from __future__ import annotations

import base64
import hashlib

import attrs
import pytest

from support import ISSUER, RESOURCE, Harness, tenant
from mcp_oauth_proxy.core.effects import run_sync
from mcp_oauth_proxy.core.flows.guard import Principal, guard
from mcp_oauth_proxy.core.http import HttpResponse, Request
from mcp_oauth_proxy.core.tenant import ResourceServer

PRM = "https://acme.example.com/.well-known/oauth-protected-resource/mcp"


def _guard(h: Harness, authorization: str | None, required: tuple[str, ...] | None = None):
    headers = () if authorization is None else (("authorization", authorization),)
    return run_sync(guard(Request("POST", "/mcp", headers=headers), h.ctx(), required), h.perform())


# -- guard ---------------------------------------------------------------------


def test_valid_token_gives_the_principal():
    h = Harness()
    client, tokens = h.tokens()
    principal = _guard(h, f"Bearer {tokens['access_token']}")
    assert isinstance(principal, Principal)
    assert principal.user_id == "user-42" and principal.client_id == client["client_id"]
    assert principal.scopes == ("mcp", "mcp:admin") and principal.resource == RESOURCE
    assert principal.expires_at == h.now + 3600


def test_no_token_is_401_with_resource_metadata_and_no_error_code():
    h = Harness()
    response = _guard(h, None)
    assert response.status == 401
    challenge = response.header("www-authenticate")
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{PRM}"' in challenge and 'scope="mcp mcp:admin"' in challenge
    # RFC 6750 §3.1: no error code or other error information, in the challenge or the body.
    assert "error=" not in challenge
    assert response.json() == {}


@pytest.mark.parametrize("value", ["Bearer mcp_at_forged", "Bearer upstream-token", "Basic abc", "Bearer ", "Bearer"])
def test_bad_tokens_are_invalid_token(value):
    h = Harness()
    response = _guard(h, value)
    assert response.status == 401
    assert 'error="invalid_token"' in response.header("www-authenticate")
    assert f'resource_metadata="{PRM}"' in response.header("www-authenticate")


def test_expired_token_is_invalid_token():
    h = Harness()
    _, tokens = h.tokens()
    h.now += 3600  # its last second (the clock is whole seconds): still good
    assert isinstance(_guard(h, f"Bearer {tokens['access_token']}"), Principal)
    h.now += 1
    response = _guard(h, f"Bearer {tokens['access_token']}")
    assert response.status == 401 and "expired" in response.header("www-authenticate")


def test_bearer_scheme_is_case_insensitive():
    h = Harness()
    _, tokens = h.tokens()
    assert isinstance(_guard(h, f"bearer {tokens['access_token']}"), Principal)


def test_too_few_scopes_is_403_insufficient_scope():
    h = Harness()
    client = h.register(scope="mcp")
    code = h.login(client["client_id"])["code"]
    tokens = h.redeem(client["client_id"], code).json()
    response = _guard(h, f"Bearer {tokens['access_token']}", required=("mcp", "mcp:admin"))
    assert response.status == 403
    challenge = response.header("www-authenticate")
    assert 'error="insufficient_scope"' in challenge and 'scope="mcp mcp:admin"' in challenge
    assert "resource_metadata=" in challenge


def test_token_of_one_tenant_is_never_valid_at_another():
    h = Harness()
    _, tokens = h.tokens()
    other = Harness(tenant=tenant(slug="globex", issuer="https://globex.example.com",
                                  resource="https://globex.example.com/mcp"), store=h.store)
    assert _guard(other, f"Bearer {tokens['access_token']}").status == 401


def test_token_for_another_resource_is_refused():
    """Audience binding: same tenant slug, but the resource moved."""
    h = Harness()
    _, tokens = h.tokens()
    moved = Harness(tenant=attrs.evolve(h.tenant, resource="https://acme.example.com/other"), store=h.store)
    assert _guard(moved, f"Bearer {tokens['access_token']}").status == 401


# -- userinfo --------------------------------------------------------------------


def test_userinfo_returns_the_upstream_profile_with_our_sub():
    h = Harness()
    _, tokens = h.tokens()
    response = h.request("GET", f"{ISSUER}/oauth/userinfo", headers=[("authorization", f"Bearer {tokens['access_token']}")])
    assert response.status == 200
    assert response.json() == {"sub": "user-42", "name": "Ada"}
    assert response.header("access-control-allow-origin") == "*"


def test_userinfo_refreshes_an_expired_upstream_token_first():
    h = Harness()
    _, tokens = h.tokens()
    h.now += 3600 - 30  # upstream token (1 h) is within the refresh skew; ours is still valid
    sent = len(h.idp.sent)
    response = h.request("GET", f"{ISSUER}/oauth/userinfo", headers=[("authorization", f"Bearer {tokens['access_token']}")])
    assert response.status == 200
    refresh_call, userinfo_call = h.idp.sent[sent:]
    assert b"grant_type=refresh_token" in refresh_call.body and b"refresh_token=upstream-rt-1" in refresh_call.body
    assert ("authorization", "Bearer upstream-at-2") in userinfo_call.headers


def test_userinfo_falls_back_to_login_claims_when_upstream_fails():
    h = Harness()
    _, tokens = h.tokens()
    h.idp.fail = lambda r: HttpResponse(503, (), b"down")
    response = h.request("GET", f"{ISSUER}/oauth/userinfo", headers=[("authorization", f"Bearer {tokens['access_token']}")])
    assert response.status == 200
    body = response.json()
    assert body["sub"] == "user-42" and body["name"] == "Ada" and body["email"] == "ada@example.org"


def test_userinfo_without_token_is_401():
    h = Harness()
    response = h.request("GET", f"{ISSUER}/oauth/userinfo")
    assert response.status == 401 and response.header("www-authenticate").startswith("Bearer")


# -- revocation ------------------------------------------------------------------


def _revoke(h: Harness, client: dict, token: str, **extra: str):
    return h.request("POST", f"{ISSUER}/oauth/revoke", form={"token": token, "client_id": client["client_id"], **extra})


def test_revoking_the_access_token_kills_only_it():
    h = Harness()
    client, tokens = h.tokens()
    response = _revoke(h, client, tokens["access_token"], token_type_hint="access_token")
    assert response.status == 200
    assert _guard(h, f"Bearer {tokens['access_token']}").status == 401
    refreshed = h.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client["client_id"]})
    assert refreshed.status == 200


def test_revoking_the_refresh_token_kills_the_family():
    h = Harness()
    client, tokens = h.tokens()
    assert _revoke(h, client, tokens["refresh_token"]).status == 200
    assert _guard(h, f"Bearer {tokens['access_token']}").status == 401
    refreshed = h.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client["client_id"]})
    assert refreshed.json()["error"] == "invalid_grant"


def test_revoking_unknown_or_foreign_tokens_is_200_and_changes_nothing():
    h = Harness()
    client, tokens = h.tokens()
    other = h.register()
    assert _revoke(h, other, tokens["access_token"]).status == 200
    assert _revoke(h, other, tokens["refresh_token"]).status == 200
    assert _revoke(h, client, "mcp_at_unknown").status == 200
    assert isinstance(_guard(h, f"Bearer {tokens['access_token']}"), Principal)


def test_revocation_needs_client_authentication():
    h = Harness()
    _, tokens = h.tokens()
    response = h.request("POST", f"{ISSUER}/oauth/revoke", form={"token": tokens["access_token"]})
    assert response.status == 401 and response.json()["error"] == "invalid_client"


# -- introspection -----------------------------------------------------------------


def _rs_tenant() -> tuple:
    secret = "rs-secret-value"
    rs = ResourceServer("mcp-server", hashlib.sha256(secret.encode()).hexdigest())
    return tenant(resource_servers=(rs,)), secret


def _introspect(h: Harness, token: str, user: str, secret: str):
    basic = base64.b64encode(f"{user}:{secret}".encode()).decode()
    return h.request("POST", f"{ISSUER}/oauth/introspect", form={"token": token},
                     headers=[("authorization", f"Basic {basic}")])


def test_resource_server_introspects_any_token():
    t, secret = _rs_tenant()
    h = Harness(tenant=t)
    client, tokens = h.tokens()
    body = _introspect(h, tokens["access_token"], "mcp-server", secret).json()
    assert body == {
        "active": True, "client_id": client["client_id"], "scope": "mcp mcp:admin", "exp": h.now + 3600,
        "iat": h.now, "sub": "user-42", "aud": RESOURCE, "iss": ISSUER, "token_type": "Bearer", "principal_type": "user",
    }
    refresh = _introspect(h, tokens["refresh_token"], "mcp-server", secret).json()
    assert refresh["active"] is True and refresh["token_type"] == "refresh_token"


def test_introspection_of_dead_tokens_says_only_inactive():
    t, secret = _rs_tenant()
    h = Harness(tenant=t)
    client, tokens = h.tokens()
    assert _introspect(h, "mcp_at_unknown", "mcp-server", secret).json() == {"active": False}
    h.now += 3601
    assert _introspect(h, tokens["access_token"], "mcp-server", secret).json() == {"active": False}


def test_introspection_needs_credentials():
    t, secret = _rs_tenant()
    h = Harness(tenant=t)
    _, tokens = h.tokens()
    assert _introspect(h, tokens["access_token"], "mcp-server", "wrong").status == 401
    public = h.request("POST", f"{ISSUER}/oauth/introspect", form={"token": tokens["access_token"], "client_id": "mcp-server"})
    assert public.status == 401


def test_a_client_may_introspect_only_its_own_tokens():
    h = Harness()
    client, tokens = h.tokens(token_endpoint_auth_method="client_secret_basic")
    other, other_tokens = h.tokens(token_endpoint_auth_method="client_secret_basic")
    assert _introspect(h, tokens["access_token"], client["client_id"], client["client_secret"]).json()["active"] is True
    assert _introspect(h, tokens["access_token"], other["client_id"], other["client_secret"]).json() == {"active": False}


def test_guard_answers_503_when_the_store_is_down():
    from mcp_oauth_proxy.core.errors import StorageUnavailable

    h = Harness()

    def down(effect):
        raise StorageUnavailable("connection refused")

    request = Request("POST", "/mcp", headers=(("authorization", "Bearer mcp_at_" + "x" * 43),))
    response = run_sync(guard(request, h.ctx()), down)
    assert response.status == 503 and response.json()["error"] == "temporarily_unavailable"
    assert response.header("retry-after") and b"refused" not in response.body


def test_guard_answers_cors_preflights_and_exposes_its_challenge():
    h = Harness()
    preflight = Request("OPTIONS", "/mcp", headers=(("origin", "https://app.example"),
                                                    ("access-control-request-method", "POST")))
    response = run_sync(guard(preflight, h.ctx()), h.perform())
    assert response.status == 204
    assert "Authorization" in response.header("access-control-allow-headers")
    denied = _guard(h, None)
    assert denied.header("access-control-allow-origin") == "*"
    assert "WWW-Authenticate" in denied.header("access-control-expose-headers")
    # A plain OPTIONS without the preflight header is not let through.
    assert _guard_method(h, "OPTIONS").status == 401


def _guard_method(h: Harness, method: str):
    return run_sync(guard(Request(method, "/mcp"), h.ctx()), h.perform())
