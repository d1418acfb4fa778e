"""The token endpoint (RFC 6749 §4.1.3, §5, §6; OAuth 2.1 §4.3; RFC 9700
§4.14.2), client authentication (RFC 6749 §2.3), and the grace window."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest

from support import ISSUER, REDIRECT, RESOURCE, VERIFIER, Harness

TOKEN = f"{ISSUER}/oauth/token"


def _basic(client_id: str, secret: str) -> list[tuple[str, str]]:
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return [("authorization", "Basic " + base64.b64encode(pair).decode())]


def _code(h: Harness, **meta) -> tuple[dict, str]:
    client = h.register(**meta)
    return client, h.login(client["client_id"])["code"]


def _guarded(h: Harness, access_token: str) -> int:
    from mcp_oauth_proxy.core.effects import run_sync
    from mcp_oauth_proxy.core.flows.guard import guard
    from mcp_oauth_proxy.core.http import Request

    request = Request("POST", "/mcp", headers=(("authorization", f"Bearer {access_token}"),))
    result = run_sync(guard(request, h.ctx()), h.perform())
    return 200 if not hasattr(result, "status") else result.status


def test_code_grant_issues_opaque_tokens_with_no_store():
    h = Harness()
    client, code = _code(h)
    response = h.redeem(client["client_id"], code)
    assert response.status == 200
    assert response.header("cache-control") == "no-store" and response.header("pragma") == "no-cache"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["scope"] == "mcp mcp:admin"
    assert body["access_token"].startswith("mcp_at_") and len(body["access_token"]) == 7 + 43
    assert body["refresh_token"].startswith("mcp_rt_") and len(body["refresh_token"]) == 7 + 43
    dump = h.store.dump()
    assert body["access_token"] not in dump and body["refresh_token"] not in dump


def test_client_without_refresh_grant_gets_no_refresh_token():
    h = Harness()
    client, code = _code(h, grant_types=["authorization_code"])
    assert "refresh_token" not in h.redeem(client["client_id"], code).json()


def test_code_is_single_use_and_a_replay_revokes_what_it_issued():
    """RFC 6749 §4.1.2: the second redemption revokes the tokens of the first."""
    h = Harness()
    client, code = _code(h)
    first = h.redeem(client["client_id"], code).json()
    assert _guarded(h, first["access_token"]) == 200
    replay = h.redeem(client["client_id"], code)
    assert replay.status == 400 and replay.json()["error"] == "invalid_grant"
    assert _guarded(h, first["access_token"]) == 401
    refreshed = h.token({"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": client["client_id"]})
    assert refreshed.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    "override, error",
    [
        ({"redirect_uri": "http://127.0.0.1:33418/other"}, "invalid_grant"),
        ({"redirect_uri": None}, "invalid_grant"),
        ({"code_verifier": None}, "invalid_request"),
        ({"code_verifier": "x" * 43}, "invalid_grant"),
        ({"code_verifier": "short"}, "invalid_grant"),
        ({"code": "mcp_code_unknown"}, "invalid_grant"),
        ({"code": None}, "invalid_request"),
        ({"resource": "https://other.example/mcp"}, "invalid_target"),
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({"grant_type": None}, "invalid_request"),
    ],
)
def test_code_grant_errors(override, error):
    h = Harness()
    client, code = _code(h)
    override = dict(override)
    response = h.redeem(client["client_id"], override.pop("code", code), **override)
    assert response.status == 400, response.body
    assert response.json()["error"] == error
    assert response.header("cache-control") == "no-store"


def test_a_failed_redemption_still_uses_up_the_code():
    h = Harness()
    client, code = _code(h)
    assert h.redeem(client["client_id"], code, code_verifier="x" * 43).status == 400
    assert h.redeem(client["client_id"], code).status == 400


def test_expired_code_is_refused():
    h = Harness()
    client, code = _code(h)
    h.now += h.tenant.policy.code_ttl
    assert h.redeem(client["client_id"], code).json()["error"] == "invalid_grant"


def test_resource_at_token_endpoint_may_repeat_ours():
    h = Harness()
    client, code = _code(h)
    assert h.redeem(client["client_id"], code, resource=RESOURCE + "/").status == 200


def test_code_of_another_client_is_refused():
    h = Harness()
    client, code = _code(h)
    other = h.register()
    assert h.redeem(other["client_id"], code).json()["error"] == "invalid_grant"


# -- client authentication ---------------------------------------------------


def test_confidential_client_with_basic_auth():
    h = Harness()
    client, code = _code(h, token_endpoint_auth_method="client_secret_basic")
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": VERIFIER}
    response = h.token(form, headers=_basic(client["client_id"], client["client_secret"]))
    assert response.status == 200, response.body


def test_confidential_client_with_post_auth():
    h = Harness()
    client, code = _code(h, token_endpoint_auth_method="client_secret_post")
    response = h.redeem(client["client_id"], code, client_secret=client["client_secret"])
    assert response.status == 200


def test_wrong_secret_with_basic_is_401_with_basic_challenge():
    h = Harness()
    client, code = _code(h, token_endpoint_auth_method="client_secret_basic")
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": VERIFIER}
    response = h.token(form, headers=_basic(client["client_id"], "mcp_secret_wrong"))
    assert response.status == 401 and response.json()["error"] == "invalid_client"
    assert response.header("www-authenticate").startswith("Basic")
    # The code was not consumed by a request that failed to authenticate.
    assert h.token(form, headers=_basic(client["client_id"], client["client_secret"])).status == 200


@pytest.mark.parametrize(
    "method, auth",
    [
        ("client_secret_basic", "none"),  # confidential client presenting no secret
        ("client_secret_basic", "post"),  # registered for basic, uses post
        ("client_secret_post", "basic"),
        ("none", "post"),
    ],
)
def test_client_must_use_its_registered_method(method, auth):
    h = Harness()
    client, code = _code(h, token_endpoint_auth_method=method)
    secret = client.get("client_secret", "mcp_secret_x")
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": VERIFIER}
    headers = None
    if auth == "basic":
        headers = _basic(client["client_id"], secret)
    else:
        form["client_id"] = client["client_id"]
        if auth == "post":
            form["client_secret"] = secret
    response = h.token(form, headers=headers)
    assert response.status == 401 and response.json()["error"] == "invalid_client"


def test_two_authentication_methods_at_once_are_refused():
    h = Harness()
    client, code = _code(h, token_endpoint_auth_method="client_secret_basic")
    response = h.redeem(client["client_id"], code, client_secret=client["client_secret"])
    assert response.status in (400, 401)
    response = h.token({"grant_type": "authorization_code", "code": code, "client_secret": "x"},
                       headers=_basic(client["client_id"], client["client_secret"]))
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("header", ["Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Digest abc"])
def test_malformed_basic_credentials_are_invalid_client(header):
    h = Harness()
    response = h.token({"grant_type": "authorization_code", "code": "x"}, headers=[("authorization", header)])
    assert response.status == 401 and response.json()["error"] == "invalid_client"


def test_no_client_authentication_at_all_is_invalid_client():
    h = Harness()
    assert h.token({"grant_type": "authorization_code", "code": "x"}).status == 401


def test_unknown_client_is_invalid_client():
    h = Harness()
    assert h.token({"grant_type": "authorization_code", "code": "x", "client_id": "mcp_client_nope"}).status == 401


def test_secret_comparison_is_constant_time(monkeypatch):
    import mcp_oauth_proxy.core.client_auth as client_auth

    calls = []
    real = client_auth.hmac.compare_digest
    monkeypatch.setattr(client_auth.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    h = Harness()
    client, code = _code(h, token_endpoint_auth_method="client_secret_post")
    h.redeem(client["client_id"], code, client_secret="wrong")
    assert calls


def test_token_endpoint_needs_a_form_body():
    h = Harness()
    response = h.request("POST", TOKEN, json_body={"grant_type": "authorization_code"})
    assert response.status == 400 and response.json()["error"] == "invalid_request"


# -- refresh ---------------------------------------------------------------------


def _refresh(h: Harness, client: dict, refresh_token: str, **extra: str):
    return h.token({"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client["client_id"], **extra})


def test_refresh_rotates_and_the_new_token_works():
    h = Harness()
    client, first = h.tokens()
    h.now += 60
    second = _refresh(h, client, first["refresh_token"])
    assert second.status == 200 and second.header("cache-control") == "no-store"
    body = second.json()
    assert body["refresh_token"] != first["refresh_token"] and body["access_token"] != first["access_token"]
    assert _guarded(h, body["access_token"]) == 200
    assert _refresh(h, client, body["refresh_token"]).status == 200


def test_refresh_presented_again_within_grace_replaces_its_successor_in_the_same_family():
    h = Harness()
    client, first = h.tokens()
    a = _refresh(h, client, first["refresh_token"]).json()
    h.now += h.tenant.policy.refresh_grace  # exactly at the edge: still a retry
    b = _refresh(h, client, first["refresh_token"])
    assert b.status == 200
    # Nothing was revoked: both access tokens work ...
    assert _guarded(h, a["access_token"]) == 200 and _guarded(h, b.json()["access_token"]) == 200
    # ... but the retry's refresh token replaced the first successor.
    assert _refresh(h, client, b.json()["refresh_token"]).status == 200


def test_refresh_reuse_after_grace_revokes_the_whole_family():
    h = Harness()
    client, first = h.tokens()
    second = _refresh(h, client, first["refresh_token"]).json()
    h.now += h.tenant.policy.refresh_grace + 1
    reuse = _refresh(h, client, first["refresh_token"])
    assert reuse.status == 400 and reuse.json()["error"] == "invalid_grant"
    assert "revoked" in reuse.json()["error_description"]
    # Every token of the family is now dead, including the legitimate successor.
    assert _guarded(h, first["access_token"]) == 401
    assert _guarded(h, second["access_token"]) == 401
    assert _refresh(h, client, second["refresh_token"]).status == 400


def test_refresh_token_is_bound_to_its_client():
    h = Harness()
    client, first = h.tokens()
    other = h.register()
    response = _refresh(h, other, first["refresh_token"])
    assert response.json()["error"] == "invalid_grant"
    # It was not rotated by the failed attempt.
    assert _refresh(h, client, first["refresh_token"]).status == 200


def test_refresh_scope_may_narrow_not_widen():
    h = Harness()
    client, first = h.tokens()
    narrow = _refresh(h, client, first["refresh_token"], scope="mcp").json()
    assert narrow["scope"] == "mcp"
    # The family keeps its original scope: the next refresh may ask for all of it.
    full = _refresh(h, client, narrow["refresh_token"], scope="mcp mcp:admin")
    assert full.status == 200
    wider = _refresh(h, client, full.json()["refresh_token"], scope="mcp other")
    assert wider.json()["error"] == "invalid_scope"


def test_expired_refresh_token_is_refused():
    h = Harness()
    client, first = h.tokens()
    h.now += h.tenant.policy.refresh_token_ttl
    assert _refresh(h, client, first["refresh_token"]).json()["error"] == "invalid_grant"


def test_rotated_refresh_token_keeps_the_family_lifetime():
    h = Harness()
    client, first = h.tokens()
    h.now += h.tenant.policy.refresh_token_ttl - 10
    second = _refresh(h, client, first["refresh_token"]).json()
    h.now += 20
    assert _refresh(h, client, second["refresh_token"]).json()["error"] == "invalid_grant"


def test_client_registered_without_refresh_grant_cannot_refresh():
    h = Harness()
    client, first = h.tokens()
    other = h.register(grant_types=["authorization_code"])
    assert _refresh(h, other, first["refresh_token"]).json()["error"] == "unauthorized_client"


def test_unknown_refresh_token():
    h = Harness()
    client, _ = h.tokens()
    assert _refresh(h, client, "mcp_rt_nope").json()["error"] == "invalid_grant"
