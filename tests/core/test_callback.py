"""The upstream's redirect back to us (RFC 6749 §4.1.2, RFC 9207 §2.4,
OIDC Core §3.1.3.7), and what we hand the client."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlencode

import pytest

from support import ISSUER, REDIRECT, UPSTREAM_ISSUER, Harness, jwt, params_of, tenant, upstream
from mcp_oauth_proxy.core.http import HttpResponse


def _to_upstream(h: Harness) -> dict[str, str]:
    client = h.register()
    page = h.request("GET", h.authorize_url(client["client_id"]))
    back = h.request("POST", f"{ISSUER}/oauth/consent",
                     form={"request_id": h.consent_request_id(page), "decision": "approve"})
    up = params_of(back.header("location"))
    h.idp.nonce = up.get("nonce")
    return up


def _callback(h: Harness, **params: str | None):
    q = {k: v for k, v in params.items() if v is not None}
    return h.request("GET", f"{ISSUER}/oauth/callback?" + urlencode(q))


def test_callback_exchanges_the_code_and_redirects_with_our_code_state_and_iss():
    h = Harness()
    up = _to_upstream(h)
    response = _callback(h, code="upstream-code", state=up["state"], iss=UPSTREAM_ISSUER)
    assert response.status == 302
    location = response.header("location")
    assert location.startswith(REDIRECT + "?")
    params = params_of(location)
    assert params["code"].startswith("mcp_code_") and len(params["code"]) > 50
    assert params["state"] == "client-state" and params["iss"] == ISSUER
    # The upstream code exchange used our PKCE verifier and our credentials.
    token_call = h.idp.sent[0]
    form = {k: v[0] for k, v in parse_qs(token_call.body.decode()).items()}
    assert token_call.url == "https://idp.example.org/token"
    assert form["grant_type"] == "authorization_code" and form["code"] == "upstream-code"
    assert form["redirect_uri"] == f"{ISSUER}/oauth/callback"
    assert len(form["code_verifier"]) >= 43
    assert form["client_id"] == "upstream-client" and form["client_secret"] == "upstream-secret-value"
    # Userinfo was fetched with the upstream token.
    assert ("authorization", "Bearer upstream-at-1") in h.idp.sent[1].headers
    # The grant keeps the user id from the id_token's sub; upstream tokens only encrypted.
    grant = next(iter(h.store._grants.values()))[0]
    assert grant.user_id == "user-42"
    assert "upstream-at-1" not in h.store.dump() and "upstream-rt-1" not in h.store.dump()
    assert params["code"] not in h.store.dump()


def test_github_shaped_upstream_uses_numeric_id_and_basic_auth_when_configured():
    h = Harness(tenant=tenant(upstream=upstream(oidc=False, token_auth_method="client_secret_basic")))
    h.idp.oidc = False
    up = _to_upstream(h)
    response = _callback(h, code="c", state=up["state"])
    assert response.status == 302, response.body
    grant = next(iter(h.store._grants.values()))[0]
    assert grant.user_id == "4242" and grant.claims["login"] == "ada"
    token_call = h.idp.sent[0]
    assert any(n == "authorization" and v.startswith("Basic ") for n, v in token_call.headers)
    assert b"client_secret" not in token_call.body
    assert ("accept", "application/json") in token_call.headers


def test_state_is_single_use():
    h = Harness()
    up = _to_upstream(h)
    assert _callback(h, code="c", state=up["state"], iss=UPSTREAM_ISSUER).status == 302
    again = _callback(h, code="c", state=up["state"], iss=UPSTREAM_ISSUER)
    assert again.status == 400 and again.header("location") is None


@pytest.mark.parametrize("state", [None, "forged-state", ""])
def test_unknown_or_missing_state_is_an_html_page(state):
    h = Harness()
    _to_upstream(h)
    response = _callback(h, code="c", state=state)
    assert response.status == 400 and response.header("content-type").startswith("text/html")
    assert h.idp.sent == []


def test_expired_state_is_refused():
    h = Harness()
    up = _to_upstream(h)
    h.now += h.tenant.policy.session_ttl
    assert _callback(h, code="c", state=up["state"], iss=UPSTREAM_ISSUER).status == 400


def _client_error(response) -> dict[str, str]:
    assert response.status == 302
    params = params_of(response.header("location"))
    assert params["state"] == "client-state" and params["iss"] == ISSUER
    return params


@pytest.mark.parametrize(
    "upstream_error, expected",
    [("access_denied", "access_denied"), ("temporarily_unavailable", "temporarily_unavailable"),
     ("server_error", "server_error"), ("invalid_scope", "access_denied"), ("login_required", "access_denied")],
)
def test_upstream_errors_reach_the_client_as_oauth_errors(upstream_error, expected):
    h = Harness()
    up = _to_upstream(h)
    params = _client_error(_callback(h, error=upstream_error, error_description="secret upstream detail",
                                     state=up["state"], iss=UPSTREAM_ISSUER))
    assert params["error"] == expected
    assert "secret upstream detail" not in params.get("error_description", "")


def test_wrong_upstream_iss_is_refused_before_any_exchange():
    """RFC 9207 §2.4: mix-up defence."""
    h = Harness()
    up = _to_upstream(h)
    params = _client_error(_callback(h, code="c", state=up["state"], iss="https://attacker.example"))
    assert params["error"] == "access_denied"
    assert h.idp.sent == []


def test_missing_iss_is_refused_when_the_upstream_advertises_it():
    h = Harness(tenant=tenant(upstream=upstream(iss_parameter_supported=True)))
    up = _to_upstream(h)
    assert _client_error(_callback(h, code="c", state=up["state"]))["error"] == "access_denied"
    assert h.idp.sent == []


def test_missing_iss_is_accepted_when_the_upstream_does_not_advertise_it():
    h = Harness()
    up = _to_upstream(h)
    assert "code" in params_of(_callback(h, code="c", state=up["state"]).header("location"))


def test_missing_code_is_access_denied():
    h = Harness()
    up = _to_upstream(h)
    assert _client_error(_callback(h, state=up["state"], iss=UPSTREAM_ISSUER))["error"] == "access_denied"


def _id_token_case(h: Harness, **claims):
    up = _to_upstream(h)
    base = {"iss": UPSTREAM_ISSUER, "aud": "upstream-client", "sub": "user-42", "exp": h.now + 600, "nonce": up["nonce"]}
    base.update(claims)
    doc = {"access_token": "upstream-at", "token_type": "Bearer", "id_token": jwt(base)}
    h.idp.fail = lambda r: HttpResponse(200, (), json.dumps(doc).encode()) if r.url.endswith("/token") else None
    return _callback(h, code="c", state=up["state"], iss=UPSTREAM_ISSUER)


@pytest.mark.parametrize(
    "claims",
    [{"nonce": "other"}, {"nonce": None}, {"aud": "someone-else"}, {"iss": "https://other-idp.example"},
     {"exp": 0}, {"sub": ""}],
)
def test_id_token_is_checked(claims):
    h = Harness()
    assert _client_error(_id_token_case(h, **claims))["error"] == "access_denied"
    assert h.store._grants == {}


def test_id_token_audience_may_be_a_list():
    h = Harness()
    assert "code" in params_of(_id_token_case(h, aud=["x", "upstream-client"]).header("location"))


def test_userinfo_for_another_subject_is_refused():
    """OIDC Core §5.3.2: the UserInfo sub must equal the id_token's."""
    h = Harness()
    up = _to_upstream(h)
    h.idp.fail = lambda r: HttpResponse(200, (), b'{"sub": "someone-else"}') if r.url.endswith("/userinfo") else None
    assert _client_error(_callback(h, code="c", state=up["state"], iss=UPSTREAM_ISSUER))["error"] == "access_denied"


@pytest.mark.parametrize(
    "answer",
    [HttpResponse(500, (), b"boom"), HttpResponse(200, (), b"not json"), HttpResponse(200, (), b"[1]"),
     HttpResponse(200, (), b'{"token_type": "Bearer"}'), HttpResponse(302, (), b"")],
)
def test_upstream_token_endpoint_faults_are_temporarily_unavailable(answer):
    h = Harness()
    up = _to_upstream(h)
    h.idp.fail = lambda r: answer
    params = _client_error(_callback(h, code="c", state=up["state"], iss=UPSTREAM_ISSUER))
    assert params["error"] == "temporarily_unavailable"
    assert "boom" not in params.get("error_description", "")


def test_upstream_refusing_the_code_is_access_denied():
    h = Harness()
    up = _to_upstream(h)
    h.idp.fail = lambda r: HttpResponse(400, (), b'{"error": "invalid_grant", "error_description": "detail"}')
    params = _client_error(_callback(h, code="c", state=up["state"], iss=UPSTREAM_ISSUER))
    assert params["error"] == "access_denied" and "detail" not in params.get("error_description", "")


def test_github_style_error_with_200_is_access_denied():
    h = Harness(tenant=tenant(upstream=upstream(oidc=False)))
    h.idp.oidc = False
    up = _to_upstream(h)
    h.idp.fail = lambda r: HttpResponse(200, (), b'{"error": "bad_verification_code"}')
    assert _client_error(_callback(h, code="c", state=up["state"]))["error"] == "access_denied"


def test_unreachable_upstream_is_temporarily_unavailable():
    from mcp_oauth_proxy.core.errors import FetchFailed

    h = Harness()
    up = _to_upstream(h)

    def refuse(request):
        raise FetchFailed("connection refused to 10.0.0.1")

    h.idp.fail = refuse
    params = _client_error(_callback(h, code="c", state=up["state"], iss=UPSTREAM_ISSUER))
    assert params["error"] == "temporarily_unavailable" and "10.0.0.1" not in params.get("error_description", "")


def test_oauth2_upstream_without_user_id_in_profile_fails_cleanly():
    h = Harness(tenant=tenant(upstream=upstream(oidc=False)))
    h.idp.oidc = False
    up = _to_upstream(h)
    h.idp.fail = lambda r: HttpResponse(200, (), b'{"login": "ada"}') if r.url.endswith("/userinfo") else None
    assert _client_error(_callback(h, code="c", state=up["state"]))["error"] == "temporarily_unavailable"


def test_oidc_without_userinfo_endpoint_uses_id_token_claims():
    h = Harness(tenant=tenant(upstream=upstream(userinfo_endpoint=None)))
    up = _to_upstream(h)
    assert _callback(h, code="c", state=up["state"], iss=UPSTREAM_ISSUER).status == 302
    grant = next(iter(h.store._grants.values()))[0]
    assert grant.user_id == "user-42" and grant.claims["email"] == "ada@example.org"
    assert "nonce" not in grant.claims


@pytest.mark.parametrize("cookie", [None, "x" * 43])
def test_callback_from_a_browser_that_did_not_consent_is_a_page_and_nothing_goes_upstream(cookie):
    h = Harness()
    up = _to_upstream(h)
    h.cookies = {} if cookie is None else {"__Host-mcp_browser": cookie}
    response = _callback(h, code="upstream-code", state=up["state"], iss=UPSTREAM_ISSUER)
    assert response.status == 403 and response.header("location") is None
    assert response.header("content-type").startswith("text/html")
    assert h.idp.sent == [] and not h.store._grants and not h.store._codes
