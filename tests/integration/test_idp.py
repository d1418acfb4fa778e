"""The identity provider the integration tests run behaves like the real
thing it stands for: an OpenID provider (discovery, RFC 9207 ``iss``, PKCE,
id_token, refresh tokens, a login that refuses a wrong password) and, in
GitHub mode, GitHub's OAuth server (no ``iss``, form-encoded token answers
unless JSON is asked for, errors with HTTP 200, a numeric ``id`` at /user)."""

from __future__ import annotations

import base64
import hashlib
import json

import httpx
import pytest

from realidp_browser import Person, Walk, walk_sync
from realidp import ADA, IdP

REDIRECT = "http://127.0.0.1:9/oauth/callback"
VERIFIER = "idp-test-verifier-" + "x" * 40
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def oidc_idp(start_idp) -> IdP:
    return start_idp([REDIRECT])


@pytest.fixture(scope="module")
def github_idp(start_idp) -> IdP:
    return start_idp([REDIRECT], mode="github")


def authorize_url(idp: IdP, scope: str, **extra: str) -> str:
    params = {"response_type": "code", "client_id": idp.client_id, "redirect_uri": REDIRECT, "scope": scope,
              "state": "s-1", "code_challenge": CHALLENGE, "code_challenge_method": "S256", **extra}
    return str(httpx.URL(idp.authorization_endpoint, params=params))


def redeem(idp: IdP, code: str, accept: str = "application/json") -> httpx.Response:
    return httpx.post(idp.token_endpoint, headers={"accept": accept}, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": VERIFIER,
        "client_id": idp.client_id, "client_secret": idp.client_secret})


def test_oidc_login_gives_id_token_refresh_token_and_profile(oidc_idp: IdP) -> None:
    meta = httpx.get(f"{oidc_idp.issuer}/.well-known/openid-configuration").json()
    assert meta["issuer"] == oidc_idp.issuer
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert meta["userinfo_endpoint"] == oidc_idp.userinfo_endpoint
    walk = Walk()
    with httpx.Client() as browser:
        params = walk_sync(browser, authorize_url(oidc_idp, "openid profile email offline_access", nonce="n-1"),
                           REDIRECT, Person(ADA["username"], ADA["password"]), walk)
    assert params["state"] == "s-1"
    assert params["iss"] == oidc_idp.issuer
    assert len(walk.pages) == 2  # login, then consent
    tokens = redeem(oidc_idp, params["code"])
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["refresh_token"]
    payload = body["id_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert (claims["sub"], claims["nonce"], claims["aud"]) == (ADA["sub"], "n-1", oidc_idp.client_id)
    profile = httpx.get(oidc_idp.userinfo_endpoint, headers={"authorization": f"Bearer {body['access_token']}"})
    assert profile.json() == {"sub": ADA["sub"], "name": ADA["name"], "email": ADA["email"], "email_verified": True}
    refreshed = httpx.post(oidc_idp.token_endpoint, data={
        "grant_type": "refresh_token", "refresh_token": body["refresh_token"],
        "client_id": oidc_idp.client_id, "client_secret": oidc_idp.client_secret})
    assert refreshed.status_code == 200 and refreshed.json()["access_token"] != body["access_token"]


def test_wrong_password_is_refused(oidc_idp: IdP) -> None:
    with httpx.Client() as browser, pytest.raises(AssertionError, match="-> 401"):
        walk_sync(browser, authorize_url(oidc_idp, "openid"), REDIRECT, Person("ada", "wrong"))


def test_pkce_is_required(oidc_idp: IdP) -> None:
    url = str(httpx.URL(oidc_idp.authorization_endpoint, params={
        "response_type": "code", "client_id": oidc_idp.client_id, "redirect_uri": REDIRECT, "scope": "openid"}))
    answer = httpx.get(url)
    assert answer.status_code == 303
    assert "error=invalid_request" in answer.headers["location"]


def test_github_mode_looks_like_github(github_idp: IdP) -> None:
    with httpx.Client() as browser:
        params = walk_sync(browser, authorize_url(github_idp, "read:user"), REDIRECT,
                           Person(ADA["username"], ADA["password"]))
    assert "iss" not in params
    form = redeem(github_idp, params["code"], accept="*/*")
    assert form.status_code == 200
    assert form.headers["content-type"].startswith("application/x-www-form-urlencoded")
    answer = dict(httpx.QueryParams(form.text))
    assert answer["access_token"]
    assert not {"refresh_token", "id_token", "expires_in"} & answer.keys()
    user = httpx.get(github_idp.userinfo_endpoint, headers={"authorization": f"Bearer {answer['access_token']}"})
    assert user.json()["id"] == ADA["id"] and user.json()["login"] == "ada"
    # A used code: an error, with HTTP 200, as JSON when asked for.
    again = redeem(github_idp, params["code"])
    assert again.status_code == 200 and again.json()["error"] == "invalid_grant"
    assert httpx.get(github_idp.userinfo_endpoint, headers={"authorization": "Bearer nope"}).status_code == 401
