"""The development identity provider's rules: it signs in only our own
upstream client, back to our callback; its codes and tokens are ours,
unexpired, used with the PKCE verifier; a name is a stable id."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from support import NOW, context, tenant

from mcp_oauth_proxy.core.errors import BrowserError, InvalidGrant
from mcp_oauth_proxy.core.flows import dev_login
from mcp_oauth_proxy.core.http import Request
from mcp_oauth_proxy.core.pkce import s256

DEV = tenant(dev_login=True)
CALLBACK = DEV.endpoint("callback")
VERIFIER = "v" * 50
GOOD = {"client_id": "dev", "redirect_uri": CALLBACK, "response_type": "code", "state": "st",
        "code_challenge": s256(VERIFIER), "code_challenge_method": "S256"}
FORM = (("content-type", "application/x-www-form-urlencoded"),)


def _post(path: str, fields: dict[str, str], now: int = NOW, headers: tuple = FORM) -> object:
    request = Request("POST", path, headers=headers, body=urlencode(fields).encode())
    handler = {"authorize": dev_login.authorize, "token": dev_login.token}[path.rsplit("/", 1)[1]]
    return handler(request, context(DEV, now))


def _code(name: str = "Ada", now: int = NOW) -> str:
    answer = _post("/oauth/dev/authorize", {**GOOD, "name": name}, now)
    assert answer.status == 303
    location = answer.header("location")
    assert location.startswith(CALLBACK + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["st"]
    return query["code"][0]


def _token(code: str, verifier: str = VERIFIER, now: int = NOW) -> object:
    return _post("/oauth/dev/token", {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK,
                                      "code_verifier": verifier}, now)


def test_a_name_signs_in_and_names_a_stable_person() -> None:
    page = dev_login.authorize(Request("GET", "/oauth/dev/authorize", urlencode(GOOD)), context(DEV))
    assert page.status == 200 and b"Development sign-in" in page.body
    answer = _token(_code("Ada"))
    assert answer.status == 200
    access = answer.json()["access_token"]
    me = dev_login.userinfo(Request("GET", "/oauth/dev/userinfo", headers=(("authorization", f"Bearer {access}"),)),
                            context(DEV))
    assert me.json() == {"sub": dev_login.user_id("Ada"), "name": "Ada", "preferred_username": "Ada"}
    assert dev_login.user_id(" ada ") == dev_login.user_id("ADA") != dev_login.user_id("Bob")


@pytest.mark.parametrize("change", [{"client_id": "other"}, {"redirect_uri": "https://evil.example/cb"},
                                    {"response_type": "token"}, {"state": ""},
                                    {"code_challenge_method": "plain"}, {"code_challenge": ""}])
def test_only_our_own_upstream_client_is_signed_in(change: dict[str, str]) -> None:
    with pytest.raises(BrowserError):
        _post("/oauth/dev/authorize", {**GOOD, **change, "name": "Ada"})


@pytest.mark.parametrize("name", ["", "x" * 65, "bell\x07", "rtl\u202e"])
def test_a_name_is_short_printable_text(name: str) -> None:
    assert _post("/oauth/dev/authorize", {**GOOD, "name": name}).status == 400


def test_codes_are_ours_unexpired_and_need_the_verifier() -> None:
    code = _code()
    body, mac = code.split(".")
    for bad in (code + "x", f"{body}.{'A' * len(mac)}", "garbage", ""):
        with pytest.raises(InvalidGrant):
            _token(bad)
    with pytest.raises(InvalidGrant):
        _token(code, verifier="w" * 50)
    with pytest.raises(InvalidGrant):
        _token(code, now=NOW + dev_login.CODE_TTL + 1)
    # A token is not a code, and a code is not a token.
    access = _token(code).json()["access_token"]
    with pytest.raises(InvalidGrant):
        _token(access)
    me = dev_login.userinfo(Request("GET", "/", headers=(("authorization", f"Bearer {code}"),)), context(DEV))
    assert me.status == 401
    late = dev_login.userinfo(Request("GET", "/", headers=(("authorization", f"Bearer {access}"),)),
                              context(DEV, NOW + dev_login.TOKEN_TTL + 1))
    assert late.status == 401


def test_another_servers_key_makes_other_codes() -> None:
    from mcp_oauth_proxy.core.context import Context

    code = _code()
    other = Context(tenant=DEV, now=NOW, random=lambda n: b"\0" * n, cookie_key=b"o" * 32)
    request = Request("POST", "/", headers=FORM, body=urlencode({"grant_type": "authorization_code", "code": code,
                                                                 "code_verifier": VERIFIER}).encode())
    with pytest.raises(InvalidGrant):
        dev_login.token(request, other)


def test_a_code_or_token_of_one_tenant_is_not_anothers() -> None:
    other = tenant("two", issuer="https://acme.example.com/two", resource="https://acme.example.com/two/mcp",
                   dev_login=True)
    request = Request("POST", "/", headers=FORM, body=urlencode({
        "grant_type": "authorization_code", "code": _code(), "code_verifier": VERIFIER}).encode())
    with pytest.raises(InvalidGrant):
        dev_login.token(request, context(other))
    access = _token(_code()).json()["access_token"]
    me = dev_login.userinfo(Request("GET", "/", headers=(("authorization", f"Bearer {access}"),)), context(other))
    assert me.status == 401
