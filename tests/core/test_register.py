"""Dynamic client registration (RFC 7591) through the router."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from mcp_oauth_proxy.core.context import token_hash

from support import NOW, Harness

URL = "https://acme.example.com/oauth/register"
TOKEN = r"[A-Za-z0-9_-]{43}"  # 256 bits, base64url without padding


def post(h: Harness, doc: Any = None, *, body: bytes | None = None, headers=None):
    if body is None:
        body = json.dumps(doc).encode()
    return h.request("POST", URL, body=body, headers=[("content-type", "application/json")] + list(headers or []))


def test_public_client():
    h = Harness()
    response = post(h, {"redirect_uris": ["http://127.0.0.1:3000/cb"], "token_endpoint_auth_method": "none",
                        "client_name": "Claude", "application_type": "native"})
    assert response.status == 201  # RFC 7591 §3.2.1
    assert response.header("cache-control") == "no-store"
    assert response.header("pragma") == "no-cache"
    assert response.header("access-control-allow-origin") == "*"
    doc = response.json()
    assert re.fullmatch("mcp_client_" + TOKEN, doc["client_id"])
    assert "client_secret" not in doc and "client_secret_expires_at" not in doc
    assert doc["client_id_issued_at"] == NOW
    assert doc["token_endpoint_auth_method"] == "none"
    assert doc["redirect_uris"] == ["http://127.0.0.1:3000/cb"]
    assert doc["grant_types"] == ["authorization_code"]  # RFC 7591 §2 default
    assert doc["response_types"] == ["code"]
    assert doc["application_type"] == "native"
    assert doc["client_name"] == "Claude"
    client = h.store.get_client("acme", doc["client_id"])
    assert client is not None and client.is_public and client.secret_hash is None


@pytest.mark.parametrize("method", [None, "client_secret_basic", "client_secret_post"])
def test_confidential_client(method):
    h = Harness()
    doc = {"redirect_uris": ["https://app.example.com/cb"], "grant_types": ["authorization_code", "refresh_token"]}
    if method is not None:
        doc["token_endpoint_auth_method"] = method
    response = post(h, doc)
    assert response.status == 201
    assert response.header("cache-control") == "no-store"
    body = response.json()
    # RFC 7591 §2: the default method is client_secret_basic.
    assert body["token_endpoint_auth_method"] == (method or "client_secret_basic")
    assert re.fullmatch("mcp_client_" + TOKEN, body["client_id"])
    secret = body["client_secret"]
    assert re.fullmatch("mcp_secret_" + TOKEN, secret)
    assert body["client_secret_expires_at"] == 0  # RFC 7591 §3.2.1: 0 = never
    assert body["grant_types"] == ["authorization_code", "refresh_token"]
    assert body["application_type"] == "web"  # OIDC registration default

    # Only the SHA-256 of the secret is kept.
    dump = h.store.dump()
    assert secret not in dump
    assert secret.removeprefix("mcp_secret_") not in dump
    assert token_hash(secret) in dump
    assert h.store.get_client("acme", body["client_id"]).secret_hash == token_hash(secret)


def test_every_registration_gets_new_credentials():
    h = Harness()
    doc = {"redirect_uris": ["https://app.example.com/cb"]}
    first, second = post(h, doc).json(), post(h, doc).json()
    assert first["client_id"] != second["client_id"]
    assert first["client_secret"] != second["client_secret"]
    assert first["client_secret"] not in (first["client_id"], second["client_id"])


@pytest.mark.parametrize(
    "application_type, uri",
    [
        ("native", "http://127.0.0.1/cb"),
        ("native", "com.example.app:/cb"),
        ("native", "cursor://anysphere.cursor-retrieval/oauth/callback"),
        ("web", "https://app.example.com/cb"),
    ],
)
def test_application_type_accepted(application_type, uri):
    # MCP 2026-07-28: clients MUST send application_type.
    response = post(Harness(), {"redirect_uris": [uri], "application_type": application_type,
                                "token_endpoint_auth_method": "none"})
    assert response.status == 201, response.body
    assert response.json()["application_type"] == application_type


@pytest.mark.parametrize(
    "redirect_uris, application_type",
    [
        (["http://127.0.0.1:33418/callback"], "native"),  # the MCP SDKs, which send none
        (["http://localhost:6274/oauth/callback", "http://[::1]/cb"], "native"),
        (["https://app.example.com/cb"], "web"),  # OIDC Registration §2's default
        (["https://app.example.com/cb", "http://127.0.0.1/cb"], "web"),
    ],
)
def test_application_type_defaults_to_native_when_every_redirect_is_loopback(redirect_uris, application_type):
    # RFC 8252 §7.3: loopback redirect URIs are a native application's.
    response = post(Harness(), {"redirect_uris": redirect_uris, "token_endpoint_auth_method": "none"})
    assert response.status == 201, response.body
    assert response.json()["application_type"] == application_type


def test_a_web_application_may_also_register_a_loopback_redirect():
    response = post(Harness(), {"redirect_uris": ["https://app.example.com/cb", "http://localhost:6274/cb"],
                                "application_type": "web", "token_endpoint_auth_method": "none"})
    assert response.status == 201, response.body


def test_optional_metadata_kept_and_unknown_ignored():
    h = Harness()
    response = post(h, {
        "redirect_uris": ["https://app.example.com/cb", "https://app.example.com/cb2", "https://app.example.com/cb"],
        "client_uri": "https://app.example.com/",
        "scope": "mcp:admin mcp mcp",
        "response_types": ["code"],
        # RFC 7591 §2: unknown metadata is ignored.
        "logo_uri": "https://app.example.com/logo.png",
        "software_id": "x",
        "something_new": {"nested": [1, 2]},
    })
    assert response.status == 201, response.body
    doc = response.json()
    assert doc["redirect_uris"] == ["https://app.example.com/cb", "https://app.example.com/cb2"]
    assert doc["client_uri"] == "https://app.example.com/"
    assert doc["scope"] == "mcp:admin mcp"
    assert "something_new" not in doc and "logo_uri" not in doc


def test_unicode_client_name_accepted():
    response = post(Harness(), {"redirect_uris": ["https://app.example.com/cb"], "client_name": "Ada’s Ünïcode 客户端 🚀"})
    assert response.status == 201
    assert response.json()["client_name"] == "Ada’s Ünïcode 客户端 🚀"


REDIRECT_OK = ["https://app.example.com/cb"]

BAD = [
    # (id, document or raw bytes, expected error)
    ("missing redirect_uris", {"client_name": "x"}, "invalid_redirect_uri"),
    ("empty redirect_uris", {"redirect_uris": []}, "invalid_redirect_uri"),
    ("null redirect_uris", {"redirect_uris": None}, "invalid_redirect_uri"),
    ("javascript uri", {"redirect_uris": ["javascript:alert(1)"]}, "invalid_redirect_uri"),
    ("data uri", {"redirect_uris": ["data:text/html,hi"]}, "invalid_redirect_uri"),
    ("file uri", {"redirect_uris": ["file:///etc/passwd"]}, "invalid_redirect_uri"),
    ("fragment", {"redirect_uris": ["https://app.example.com/cb#x"]}, "invalid_redirect_uri"),
    ("http non-loopback", {"redirect_uris": ["http://app.example.com/cb"]}, "invalid_redirect_uri"),
    ("one bad among good", {"redirect_uris": REDIRECT_OK + ["http://evil.example/cb"]}, "invalid_redirect_uri"),
    ("relative uri", {"redirect_uris": ["/cb"]}, "invalid_redirect_uri"),
    ("private scheme for web", {"redirect_uris": ["com.example.app:/cb"], "application_type": "web"},
     "invalid_redirect_uri"),
    ("private scheme by default web", {"redirect_uris": ["com.example.app:/cb"]}, "invalid_redirect_uri"),
    # OIDC Registration §2: a web application's redirect URIs are not loopback ones.
    ("web with only loopback redirects",
     {"redirect_uris": ["http://localhost:6274/oauth/callback", "http://127.0.0.1/cb"], "application_type": "web"},
     "invalid_redirect_uri"),
    ("control char in uri", {"redirect_uris": ["https://app.example.com/c\nb"]}, "invalid_redirect_uri"),
    ("too many redirect uris", {"redirect_uris": [f"https://app.example.com/cb{i}" for i in range(21)]},
     "invalid_redirect_uri"),
    ("redirect_uris a string", {"redirect_uris": "https://app.example.com/cb"}, "invalid_client_metadata"),
    ("redirect_uris of numbers", {"redirect_uris": [1]}, "invalid_client_metadata"),
    ("redirect_uris an object", {"redirect_uris": {"a": "https://app.example.com/cb"}}, "invalid_client_metadata"),
    ("not json", b"redirect_uris=https://app.example.com/cb", "invalid_client_metadata"),
    ("empty body", b"", "invalid_client_metadata"),
    ("json array", b'["https://app.example.com/cb"]', "invalid_client_metadata"),
    ("json string", b'"x"', "invalid_client_metadata"),
    ("json null", b"null", "invalid_client_metadata"),
    ("json number", b"1", "invalid_client_metadata"),
    ("invalid utf-8", b'{"redirect_uris": ["https://app.example.com/\xff"]}', "invalid_client_metadata"),
    ("truncated json", b'{"redirect_uris": ["https://app.example.com/cb"]', "invalid_client_metadata"),
    ("too large", b'{"client_name": "' + b"a" * 70000 + b'"}', "invalid_client_metadata"),
    ("deeply nested", b'{"x": ' + b"[" * 30000 + b"]" * 30000 + b"}", "invalid_client_metadata"),
    ("nested too deep for the parser", b"[" * 50000, "invalid_client_metadata"),
    ("lone surrogate in name", b'{"redirect_uris": ["https://app.example.com/cb"], "client_name": "\\ud800"}',
     "invalid_client_metadata"),
    ("lone surrogate in grant", b'{"redirect_uris": ["https://app.example.com/cb"], "grant_types": ["\\udfff"]}',
     "invalid_client_metadata"),
    ("lone surrogate in key", b'{"redirect_uris": ["https://app.example.com/cb"], "\\ud800": 1}',
     "invalid_client_metadata"),
    ("unsupported grant", {"grant_types": ["client_credentials"]}, "invalid_client_metadata"),
    ("implicit grant", {"grant_types": ["implicit"]}, "invalid_client_metadata"),
    ("password grant", {"grant_types": ["authorization_code", "password"]}, "invalid_client_metadata"),
    ("refresh only", {"grant_types": ["refresh_token"]}, "invalid_client_metadata"),
    ("empty grants", {"grant_types": []}, "invalid_client_metadata"),
    ("grant_types a string", {"grant_types": "authorization_code"}, "invalid_client_metadata"),
    ("response type token", {"response_types": ["token"]}, "invalid_client_metadata"),
    ("response types code+token", {"response_types": ["code", "token"]}, "invalid_client_metadata"),
    ("response type id_token", {"response_types": ["code id_token"]}, "invalid_client_metadata"),
    ("empty response types", {"response_types": []}, "invalid_client_metadata"),
    ("auth method jwt", {"token_endpoint_auth_method": "private_key_jwt"}, "invalid_client_metadata"),
    ("auth method tls", {"token_endpoint_auth_method": "tls_client_auth"}, "invalid_client_metadata"),
    ("auth method case", {"token_endpoint_auth_method": "NONE"}, "invalid_client_metadata"),
    ("auth method number", {"token_endpoint_auth_method": 1}, "invalid_client_metadata"),
    ("application_type browser", {"application_type": "browser"}, "invalid_client_metadata"),
    ("application_type case", {"application_type": "Native"}, "invalid_client_metadata"),
    ("application_type list", {"application_type": ["native"]}, "invalid_client_metadata"),
    ("unknown scope", {"scope": "mcp admin:everything"}, "invalid_client_metadata"),
    ("malformed scope", {"scope": "mcp  mcp:admin"}, "invalid_client_metadata"),
    ("quote in scope", {"scope": 'mcp"'}, "invalid_client_metadata"),
    ("scope a list", {"scope": ["mcp"]}, "invalid_client_metadata"),
    ("long client_name", {"client_name": "a" * 201}, "invalid_client_metadata"),
    ("newline in client_name", {"client_name": "Good App\nApprove me"}, "invalid_client_metadata"),
    ("nul in client_name", {"client_name": "a\x00b"}, "invalid_client_metadata"),
    ("del in client_name", {"client_name": "a\x7fb"}, "invalid_client_metadata"),
    ("c1 control in client_name", {"client_name": "a\x85b"}, "invalid_client_metadata"),
    # Trojan Source style spoofing on the consent page (CVE-2021-42574).
    ("bidi override in client_name", {"client_name": "Good \u202eppA liveE"}, "invalid_client_metadata"),
    # Invisible format characters: "Clau\u200bde" shows as a known client's name.
    ("zero-width space in client_name", {"client_name": "Clau\u200bde"}, "invalid_client_metadata"),
    ("zero-width joiner in client_name", {"client_name": "Clau\u200dde"}, "invalid_client_metadata"),
    ("word joiner in client_name", {"client_name": "Clau\u2060de"}, "invalid_client_metadata"),
    ("byte order mark in client_name", {"client_name": "\ufeffClaude"}, "invalid_client_metadata"),
    ("soft hyphen in client_name", {"client_name": "Clau\u00adde"}, "invalid_client_metadata"),
    # Default_Ignorable_Code_Point (Unicode UAX #44) that are not format characters, and
    # what isprintable() calls invisible: unseen on the page all the same (a second review).
    *[(f"U+{ord(ch):04X} in client_name", {"client_name": f"Clau{ch}de"}, "invalid_client_metadata")
      for ch in "\u034f\ufe0f\U000e0100\u180b\u17b4\u115f\u1160\u3164\uffa0\u2028\u2029\u00a0\u3000"
                "\u0378\ue000\U000e0041\u061c\U0001bca0\U0001d173"],
    # A name that shows as nothing (a review: the consent page said "Allow   ?"
    # rather than falling back to the client's id).
    ("blank client_name", {"client_name": "   "}, "invalid_client_metadata"),
    ("braille blank client_name", {"client_name": "\u2800"}, "invalid_client_metadata"),
    ("blanks client_name", {"client_name": " \u2800\u2800 "}, "invalid_client_metadata"),
    ("client_name a number", {"client_name": 5}, "invalid_client_metadata"),
    ("client_name an object", {"client_name": {"en": "x"}}, "invalid_client_metadata"),
    ("client_uri a number", {"client_uri": 5}, "invalid_client_metadata"),
    ("client_uri javascript", {"client_uri": "javascript:alert(1)"}, "invalid_client_metadata"),
    ("client_uri unparsable", {"client_uri": "http://[::1"}, "invalid_client_metadata"),
    ("client_uri bad port", {"client_uri": "https://app.example.com:99999/"}, "invalid_client_metadata"),
    ("client_uri no host", {"client_uri": "https:///x"}, "invalid_client_metadata"),
    ("client_uri non-ASCII", {"client_uri": "https://\u0430\u0440\u0440.com/"}, "invalid_client_metadata"),
]


@pytest.mark.parametrize("doc, error", [pytest.param(d, e, id=i) for i, d, e in BAD])
def test_bad_metadata(doc, error):
    h = Harness()
    before = h.store.dump()
    if isinstance(doc, bytes):
        response = post(h, body=doc)
    else:
        if "redirect_uris" not in doc and error != "invalid_redirect_uri":
            doc = {"redirect_uris": REDIRECT_OK, **doc}
        response = post(h, doc)
    assert response.status == 400, response.body  # RFC 7591 §3.2.2
    assert response.header("content-type") == "application/json"
    assert response.header("cache-control") == "no-store"
    body = response.json()
    assert body["error"] == error
    assert isinstance(body.get("error_description", ""), str)
    assert h.store.dump() == before  # nothing registered


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_register_wrong_method(method):
    response = Harness().request(method, URL)
    assert response.status == 405
    assert response.header("allow") == "POST"


def test_register_preflight():
    response = Harness().request("OPTIONS", URL)
    assert response.status == 204
    assert "POST" in response.header("access-control-allow-methods")
    assert "content-type" in response.header("access-control-allow-headers").lower()


def test_registered_client_can_use_its_loopback_redirect_on_any_port():
    """The registration is what authorize checks against (RFC 8252 §7.3)."""
    h = Harness()
    client = h.register(redirect_uris=["http://127.0.0.1/callback"])
    page = h.request("GET", h.authorize_url(client["client_id"], redirect_uri="http://127.0.0.1:45678/callback"))
    assert page.status == 200, page.body  # the consent page
    page = h.request("GET", h.authorize_url(client["client_id"], redirect_uri="http://127.0.0.1:45678/callback#x"))
    assert page.status == 400 and page.header("location") is None  # never redirected


def test_empty_scope_is_no_scope_and_port_zero_is_refused():
    from support import Harness

    h = Harness()
    assert "scope" not in h.register(scope="")
    response = h.request("POST", "https://acme.example.com/oauth/register",
                         json_body={"redirect_uris": ["http://127.0.0.1:0/cb"]})
    assert response.status == 400 and response.json()["error"] == "invalid_redirect_uri"


def test_nan_and_infinity_are_not_json():
    import pytest as _pytest

    from mcp_oauth_proxy.core.http import parse_json

    for text in ('{"exp": NaN}', '{"exp": Infinity}', '[-Infinity]'):
        with _pytest.raises(ValueError):
            parse_json(text)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          None])
def test_a_registration_is_json_by_its_content_type(content_type):
    # RFC 7591 §3.1: the request is application/json. A page elsewhere can
    # post text/plain (or a form) to us from a visitor's browser without
    # asking; never a JSON request.
    h = Harness()
    before = h.store.dump()
    headers = [] if content_type is None else [("content-type", content_type)]
    body = json.dumps({"redirect_uris": REDIRECT_OK, "token_endpoint_auth_method": "none"}).encode()
    response = h.request("POST", URL, body=body, headers=headers)
    assert response.status == 400
    assert response.json()["error"] == "invalid_client_metadata"
    assert h.store.dump() == before


@pytest.mark.parametrize("name", ["Café Bot", "Cafe\u0301 Bot", "日本語のクライアント", "Ünïcödé ✓", "Claude (Desktop)",
                                  "مساعد", "क्लाइंट"])
def test_names_in_any_script_are_kept(name):
    h = Harness()
    response = post(h, {"redirect_uris": REDIRECT_OK, "token_endpoint_auth_method": "none", "client_name": name})
    assert response.status == 201, response.body
    assert response.json()["client_name"] == name


def test_a_json_content_type_may_name_its_charset():
    h = Harness()
    response = h.request("POST", URL, body=json.dumps({"redirect_uris": REDIRECT_OK,
                                                       "token_endpoint_auth_method": "none"}).encode(),
                         headers=[("content-type", "Application/JSON; charset=utf-8")])
    assert response.status == 201, response.body
