"""Discovery through the router: RFC 8414 authorization server metadata (and
its OIDC Discovery twin), RFC 9728 protected resource metadata, the JWKS,
CORS, wrong methods and unknown paths."""

from __future__ import annotations

import pytest

from support import Harness, tenant

ROOT = tenant()  # https://acme.example.com, resource https://acme.example.com/mcp
PATHED = tenant("acme", "https://auth.example.com/acme", "https://auth.example.com/acme/mcp")
SLASHED = tenant("acme", "https://auth.example.com/acme/", "https://auth.example.com/acme/mcp")
ROOT_SLASHED = tenant("acme", "https://acme.example.com/", "https://acme.example.com/mcp")

# (tenant, every URL a client may derive the AS metadata from)
AS_URLS = [
    (ROOT, "https://acme.example.com/.well-known/oauth-authorization-server"),
    (ROOT, "https://acme.example.com/.well-known/openid-configuration"),
    (ROOT_SLASHED, "https://acme.example.com/.well-known/oauth-authorization-server"),
    (ROOT_SLASHED, "https://acme.example.com/.well-known/openid-configuration"),
    # RFC 8414 §3.1: the well-known segment goes between host and path
    (PATHED, "https://auth.example.com/.well-known/oauth-authorization-server/acme"),
    (PATHED, "https://auth.example.com/.well-known/openid-configuration/acme"),
    # OIDC Discovery §4: path appending
    (PATHED, "https://auth.example.com/acme/.well-known/openid-configuration"),
    # RFC 8414 §3.1: a terminating "/" of the issuer is removed before inserting
    (SLASHED, "https://auth.example.com/.well-known/oauth-authorization-server/acme"),
    (SLASHED, "https://auth.example.com/.well-known/openid-configuration/acme"),
    (SLASHED, "https://auth.example.com/acme/.well-known/openid-configuration"),
]


@pytest.mark.parametrize("t, url", AS_URLS)
def test_authorization_server_metadata(t, url):
    response = Harness(tenant=t).request("GET", url)
    assert response.status == 200
    assert response.header("content-type") == "application/json"
    doc = response.json()
    # RFC 8414 §3.3: exactly the configured string, trailing slash and all.
    assert doc["issuer"] == t.issuer
    base = t.issuer.rstrip("/")
    assert doc["authorization_endpoint"] == f"{base}/oauth/authorize"
    assert doc["token_endpoint"] == f"{base}/oauth/token"
    assert doc["registration_endpoint"] == f"{base}/oauth/register"
    assert doc["revocation_endpoint"] == f"{base}/oauth/revoke"
    assert doc["introspection_endpoint"] == f"{base}/oauth/introspect"
    assert doc["userinfo_endpoint"] == f"{base}/oauth/userinfo"
    assert doc["jwks_uri"] == f"{base}/oauth/jwks"
    assert doc["response_types_supported"] == ["code"]
    # Exactly what the token endpoint accepts: no jwt-bearer (ID-JAG) where no issuer is trusted.
    assert doc["grant_types_supported"] == ["authorization_code", "refresh_token", "client_credentials"]
    # MCP: clients refuse a server that does not list it; S256 only (RFC 9700 §2.1.1).
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert sorted(doc["token_endpoint_auth_methods_supported"]) == [
        "client_secret_basic", "client_secret_post", "none", "private_key_jwt"]
    # RFC 8414 §2: private_key_jwt's algorithms, asymmetric only (never none or HMAC).
    algs = doc["token_endpoint_auth_signing_alg_values_supported"]
    assert {"RS256", "ES256", "EdDSA"} <= set(algs)
    assert not [a for a in algs if a == "none" or a.startswith("HS")]
    assert doc["authorization_response_iss_parameter_supported"] is True  # RFC 9207 §3
    assert doc["scopes_supported"] == list(t.scopes)
    # CORS: browser-based clients fetch() this document.
    assert response.header("access-control-allow-origin") == "*"


def test_metadata_endpoints_are_routed():
    """Every endpoint the metadata advertises answers (not 404) at its URL."""
    h = Harness(tenant=PATHED)
    doc = h.request("GET", "https://auth.example.com/.well-known/oauth-authorization-server/acme").json()
    for key in ("authorization_endpoint", "token_endpoint", "registration_endpoint", "revocation_endpoint",
                "introspection_endpoint", "userinfo_endpoint", "jwks_uri"):
        response = h.request("OPTIONS" if key != "authorization_endpoint" else "GET", doc[key])
        assert response.status != 404, key


@pytest.mark.parametrize(
    "t, url",
    [
        # RFC 8414 §3.1: the root document is another issuer's; not ours when we have a path.
        (PATHED, "https://auth.example.com/.well-known/oauth-authorization-server"),
        (PATHED, "https://auth.example.com/.well-known/openid-configuration"),
        (PATHED, "https://auth.example.com/.well-known/oauth-authorization-server/acme/"),
        (PATHED, "https://auth.example.com/.well-known/oauth-authorization-server/acmecorp"),
        (PATHED, "https://auth.example.com/.well-known/oauth-authorization-server/globex"),
        (PATHED, "https://auth.example.com/acme/.well-known/openid-configuration/acme"),
        (ROOT, "https://acme.example.com/.well-known/oauth-authorization-server/acme"),
        (ROOT, "https://acme.example.com/.well-known/OAUTH-authorization-server"),
        (ROOT, "https://acme.example.com/.well-known/oauth-authorization-server/"),
        (ROOT, "https://acme.example.com/.well-known/"),
        (ROOT, "https://acme.example.com/"),
        (ROOT, "https://acme.example.com/oauth/"),
        (ROOT, "https://acme.example.com/oauth/nope"),
        (ROOT, "https://acme.example.com/oauth/token/"),
        (ROOT, "https://acme.example.com/acme/oauth/token"),
        (PATHED, "https://auth.example.com/oauth/token"),
    ],
)
def test_unknown_path_is_404_json(t, url):
    response = Harness(tenant=t).request("GET", url)
    assert response.status == 404
    assert response.header("content-type") == "application/json"
    assert response.json()["error"] == "not_found"


# -- RFC 9728 protected resource metadata ----------------------------------------

PR_URLS = [
    (ROOT, "https://acme.example.com/.well-known/oauth-protected-resource/mcp"),  # RFC 9728 §3.1
    (ROOT, "https://acme.example.com/.well-known/oauth-protected-resource"),  # the root clients fall back to
    (PATHED, "https://auth.example.com/.well-known/oauth-protected-resource/acme/mcp"),
    (PATHED, "https://auth.example.com/.well-known/oauth-protected-resource"),
    (SLASHED, "https://auth.example.com/.well-known/oauth-protected-resource/acme/mcp"),
    (tenant(resource="https://acme.example.com/mcp/"),
     "https://acme.example.com/.well-known/oauth-protected-resource/mcp"),
]


@pytest.mark.parametrize("t, url", PR_URLS)
def test_protected_resource_metadata(t, url):
    response = Harness(tenant=t).request("GET", url)
    assert response.status == 200
    doc = response.json()
    # RFC 9728 §3.3: identical to the configured resource.
    assert doc["resource"] == t.resource
    # MCP: non-empty, and naming exactly our issuer string.
    assert doc["authorization_servers"] == [t.issuer]
    assert doc["scopes_supported"] == list(t.scopes)
    assert doc["bearer_methods_supported"] == ["header"]
    assert response.header("access-control-allow-origin") == "*"


def test_protected_resource_metadata_names_the_resource():
    t = tenant(resource_name="Acme tools")
    doc = Harness(tenant=t).request("GET", "https://acme.example.com/.well-known/oauth-protected-resource/mcp").json()
    assert doc["resource_name"] == "Acme tools"


@pytest.mark.parametrize(
    "url",
    [
        "https://acme.example.com/.well-known/oauth-protected-resource/other",
        "https://acme.example.com/.well-known/oauth-protected-resource/mcp/",
        "https://acme.example.com/.well-known/oauth-protected-resource/mcp/x",
    ],
)
def test_protected_resource_metadata_other_resource_404(url):
    assert Harness().request("GET", url).status == 404


def test_jwks_is_empty():
    response = Harness(tenant=PATHED).request("GET", "https://auth.example.com/acme/oauth/jwks")
    assert response.status == 200
    assert response.json() == {"keys": []}  # our tokens are opaque
    assert response.header("access-control-allow-origin") == "*"


# -- CORS and methods ---------------------------------------------------------------

DISCOVERY = [
    "https://acme.example.com/.well-known/oauth-authorization-server",
    "https://acme.example.com/.well-known/openid-configuration",
    "https://acme.example.com/.well-known/oauth-protected-resource/mcp",
    "https://acme.example.com/.well-known/oauth-protected-resource",
    "https://acme.example.com/oauth/jwks",
]


@pytest.mark.parametrize("url", DISCOVERY)
def test_preflight(url):
    response = Harness().request(
        "OPTIONS", url, headers=[("origin", "https://app.example"), ("access-control-request-method", "GET")]
    )
    assert response.status == 204
    assert response.body == b""
    assert response.header("access-control-allow-origin") == "*"
    methods = [m.strip() for m in response.header("access-control-allow-methods").split(",")]
    assert "GET" in methods and "OPTIONS" in methods and "POST" not in methods
    # MCP clients send MCP-Protocol-Version with discovery requests.
    assert "mcp-protocol-version" in response.header("access-control-allow-headers").lower()
    assert "www-authenticate" in response.header("access-control-expose-headers").lower()


@pytest.mark.parametrize("url", DISCOVERY)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_wrong_method_405_with_allow(url, method):
    response = Harness().request(method, url, body=b"{}")
    assert response.status == 405  # RFC 9110 §15.5.6
    assert response.header("allow") == "GET"
    assert response.json()["error"] == "invalid_request"
    assert response.header("access-control-allow-origin") == "*"


@pytest.mark.parametrize(
    "path, allow",
    [
        ("/oauth/register", "POST"),
        ("/oauth/token", "POST"),
        ("/oauth/revoke", "POST"),
        ("/oauth/introspect", "POST"),
        ("/oauth/jwks", "GET"),
        # Browser routes answer with an HTML page, which keeps the header too.
        ("/oauth/callback", "GET"),
        ("/oauth/consent", "POST"),
        ("/oauth/authorize", "GET, POST"),
    ],
)
def test_oauth_endpoints_wrong_method(path, allow):
    response = Harness().request("PUT", f"https://acme.example.com{path}")
    assert response.status == 405
    assert response.header("allow") == allow


def test_metadata_is_cacheable_but_not_per_user():
    response = Harness().request("GET", "https://acme.example.com/.well-known/oauth-authorization-server")
    assert "max-age" in response.header("cache-control")
    assert response.header("set-cookie") is None
