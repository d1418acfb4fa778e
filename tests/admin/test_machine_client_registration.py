"""Registering clients without a browser through the admin API and the CLI:
an organization's token only for its servers, the secret shown once and
kept only as its hash, public keys only, and the rules naming their fields."""

from __future__ import annotations

import json

from admin_client import Admin, org_token
from jwt_signers import Signer
from test_admin_api import _setup

from mcp_oauth_proxy.core.context import token_hash

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def test_an_organizations_token_cannot_register_a_client_to_another_organizations_server(admin: Admin) -> None:
    _setup(admin, "acme")
    _setup(admin, "globex")
    acme = org_token(admin, "acme")
    a = acme.post("/servers/globex/clients", {"grant_types": ["client_credentials"]})
    assert a.status == 404 and a.body["detail"] == acme.post("/servers/nowhere/clients", {}).body["detail"].replace(
        "nowhere", "globex")
    assert admin.store.list_clients(tenant="globex", limit=10) == []
    assert acme.post("/servers/acme/clients", {}).status == 201


def test_invalid_machine_clients_are_refused_naming_the_field(admin: Admin) -> None:
    _setup(admin)
    private = Signer("ES256").jwk | {"d": "c2VjcmV0"}
    for body, field in (
        ({"grant_types": ["authorization_code"]}, "grant_types"),
        ({"grant_types": []}, "grant_types"),
        ({"token_endpoint_auth_method": "none"}, "token_endpoint_auth_method"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "jwks"),
        ({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [private]}}, "jwks"),
        ({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [{"kty": "oct", "k": "abc"}]}}, "jwks"),
        ({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "ftp://keys.example/jwks"}, "jwks_uri"),
        ({"jwks_uri": "https://keys.example/jwks"}, "jwks"),
        ({"scope": "mcp admin:everything"}, "scope"),
        ({"redirect_uris": ["https://x.example/cb"]}, "redirect_uris"),
        ({"client_secret": "mine"}, "client_secret"),
        # A review: a key with 900,000 characters of padding was kept.
        ({"token_endpoint_auth_method": "private_key_jwt",
          "jwks": {"keys": [Signer("ES256").jwk | {"x-padding": "a" * 70_000}]}}, "jwks"),
    ):
        a = admin.post("/servers/acme/clients", body)
        assert a.status == 422, body
        assert [e["field"] for e in a.body["errors"]] == [field], (body, a.body)
    assert admin.store.list_clients(tenant="acme", limit=10) == []


def test_a_machine_client_is_registered_with_its_secret_shown_once(admin: Admin) -> None:
    _setup(admin)
    a = admin.post("/servers/acme/clients", {"client_name": "nightly job", "grant_types": ["client_credentials",
                                                                                         "jwt-bearer"]})
    assert a.status == 201
    doc = a.body
    secret = doc["client_secret"]
    assert secret.startswith("mcp_secret_") and doc["client_id"].startswith("mcp_client_")
    assert doc["grant_types"] == ["client_credentials", JWT_BEARER] and doc["machine"] is True
    assert doc["token_endpoint_auth_method"] == "client_secret_basic" and doc["redirect_uris"] == []
    stored = admin.store.get_client("acme", doc["client_id"])
    assert stored.secret_hash == token_hash(secret) and stored.expires_at is None
    shown = admin.get(f"/servers/acme/clients/{doc['client_id']}").body
    assert "client_secret" not in shown and secret not in json.dumps(shown)
    events = admin.get("/audit", event="admin.client_created").body["items"]
    assert events and secret not in json.dumps(events)


def test_a_private_key_jwt_client_keeps_its_public_keys(admin: Admin) -> None:
    _setup(admin)
    jwks = {"keys": [Signer("RS256").jwk]}
    a = admin.post("/servers/acme/clients", {"token_endpoint_auth_method": "private_key_jwt", "jwks": jwks,
                                            "scope": "mcp"})
    assert a.status == 201 and "client_secret" not in a.body
    assert a.body["jwks"] == jwks and a.body["scope"] == "mcp"
    b = admin.post("/servers/acme/clients", {"token_endpoint_auth_method": "private_key_jwt",
                                            "jwks_uri": "https://keys.example/jwks"})
    assert b.status == 201 and b.body["jwks_uri"] == "https://keys.example/jwks"


def test_a_server_trusts_id_jag_issuers_set_through_the_api(admin: Admin) -> None:
    _setup(admin)
    a = admin.patch("/servers/acme", {"id_jag_issuers": ["https://login.acme.example"]})
    assert a.status == 200, a.body
    assert admin.get("/servers/acme").body["id_jag_issuers"] == ["https://login.acme.example"]
    bad = admin.patch("/servers/acme", {"id_jag_issuers": ["not a url"]})
    assert bad.status == 422 and bad.body["errors"][0]["field"] == "id_jag_issuers"


