"""The admin API's rules: authentication, problem details, the directory's
operations, organization scoping (404, never a hint), write-only secrets,
pagination, clients, grants and the audit log."""

from __future__ import annotations

import json
from typing import Any

import pytest
from admin_client import SECRET, T0, Admin, oauth_config, org_token, server
from storage.storage_records import client, grant, with_tokens

from mcp_oauth_proxy.admin.api import ROUTES


def _setup(admin: Admin, org: str = "acme") -> None:
    assert admin.post("/organizations", {"name": org}).status == 201
    assert admin.post("/oauth-configs", oauth_config(organization=org)).status == 201
    assert admin.post("/servers", server(slug=org, organization=org)).status == 201


# -- authentication and the shape of errors ---------------------------------------------


@pytest.mark.parametrize("token", ["", "mcp_admin_wrong", "mcp_at_" + "x" * 40, "Basic abc"])
def test_no_valid_token_is_a_401_problem(admin: Admin, token: str) -> None:
    a = admin.get("/organizations", token=token or "")
    assert a.status == 401
    assert a.headers["content-type"] == "application/problem+json"
    assert a.headers["www-authenticate"].startswith("Bearer")
    assert a.body["status"] == 401 and a.body["title"] == "Unauthorized" and a.body["type"] == "about:blank"


def test_a_deleted_token_opens_nothing(admin: Admin) -> None:
    other = org_token(admin, "acme") if admin.post("/organizations", {"name": "acme"}).status == 201 else None
    assert other is not None and other.get("/organizations").status == 200
    (record,) = [t for t in admin.store.list_admin_tokens() if t.organization == "acme"]
    assert admin.store.delete_admin_token(token_id=record.token_id)
    assert other.get("/organizations").status == 401


def test_unknown_paths_methods_and_bodies_are_problems(admin: Admin) -> None:
    assert admin.get("/nothing").status == 404
    a = admin.call("PUT", "/organizations")
    assert a.status == 405 and a.headers["allow"] == "GET, POST"
    assert admin.post("/organizations", b"name=x", content_type="application/x-www-form-urlencoded").status == 415
    a = admin.post("/organizations", b"{not json")
    assert a.status == 422 and a.body["errors"] == [{"field": "body", "detail": "not valid JSON"}]
    assert admin.post("/organizations", [1, 2]).status == 422
    a = admin.get("/organizations", colour="red")
    assert a.status == 422 and a.body["errors"][0]["field"] == "colour"
    for limit in ("0", "501", "abc", "-1"):
        assert admin.get("/organizations", limit=limit).status == 422
    # A path segment that is not UTF-8 once decoded is no resource of ours.
    assert admin.get("/organizations/%ff").status == 404


def test_the_openapi_document_describes_every_route(admin: Admin) -> None:
    from openapi_spec_validator import validate

    a = admin.get("/openapi.json", token="")  # describing itself needs no token
    assert a.status == 200
    validate(a.body)
    for route in ROUTES:
        op = a.body["paths"][route.path][route.method.lower()]
        assert {p["name"] for p in op["parameters"] if p["in"] == "query"} == set(route.query)
    assert a.body["paths"]["/oauth-configs"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "properties"]["client_secret"]["writeOnly"] is True


# -- the directory ------------------------------------------------------------------------


def test_organizations_create_list_show_update_delete(admin: Admin) -> None:
    a = admin.post("/organizations", {"name": "acme", "display_name": "Acme Inc."})
    assert a.status == 201 and a.headers["location"] == "/admin/api/v1/organizations/acme"
    assert a.body == {"name": "acme", "display_name": "Acme Inc.", "created_at": T0}
    assert admin.post("/organizations", {"name": "acme"}).status == 409
    assert admin.post("/organizations", {"name": "Not A Slug"}).body["errors"][0]["field"] == "name"
    assert admin.get("/organizations").body == {"items": [a.body], "next_cursor": None}
    assert admin.patch("/organizations/acme", {"display_name": "ACME"}).body["display_name"] == "ACME"
    assert admin.patch("/organizations/acme", {"name": "other"}).status == 422
    assert admin.delete("/organizations/acme").status == 200
    assert admin.get("/organizations/acme").status == 404


def test_an_oauth_config_secret_is_write_only(admin: Admin) -> None:
    admin.post("/organizations", {"name": "acme"})
    answers = [admin.post("/oauth-configs", oauth_config()), admin.get("/oauth-configs/acme/github-main"),
               admin.get("/oauth-configs"), admin.patch("/oauth-configs/acme/github-main", {"client_secret": "new-s3cret"})]
    for a in answers:
        assert a.status in (200, 201)
        assert SECRET not in json.dumps(a.body) and "new-s3cret" not in json.dumps(a.body)
    assert answers[1].body["client_secret"] == "set"
    # The new secret is what the store holds (sealed), and no audit event tells it.
    assert admin.store.get_oauth_config("acme", "github-main").client_secret == "new-s3cret"
    events = admin.get("/audit").body["items"]
    assert {e["event"] for e in events} >= {"admin.oauth_config_created", "admin.oauth_config_updated"}
    assert SECRET not in json.dumps(events) and "new-s3cret" not in json.dumps(events)


def test_the_named_presets_keep_their_settings(admin: Admin) -> None:
    admin.post("/organizations", {"name": "acme"})
    tenant = "9b3c1d2e-4f5a-4b6c-8d7e-0f1a2b3c4d5e"
    a = admin.post("/oauth-configs", oauth_config("corp", kind="entra", tenant=tenant))
    assert a.status == 201 and a.body["tenant"] == tenant and a.body["user_pool_id"] is None
    b = admin.post("/oauth-configs", oauth_config("pool", kind="cognito", user_pool_id="eu-west-1_AbC123"))
    assert b.status == 201 and admin.store.get_oauth_config("acme", "pool").user_pool_id == "eu-west-1_AbC123"
    assert admin.patch("/oauth-configs/acme/corp", {"tenant": "organizations"}).body["tenant"] == "organizations"
    refused = admin.post("/oauth-configs", oauth_config("bad", kind="cognito", user_pool_id="AbC123"))
    assert refused.status == 422 and {e["field"] for e in refused.body["errors"]} == {"user_pool_id"}
    refused = admin.post("/oauth-configs", oauth_config("none", kind="entra"))
    assert refused.status == 422 and {e["field"] for e in refused.body["errors"]} == {"tenant"}
    refused = admin.post("/oauth-configs", oauth_config("long", kind="entra", tenant="t" * 65))
    assert refused.status == 422 and {e["field"] for e in refused.body["errors"]} == {"tenant"}


def test_invalid_values_name_their_fields(admin: Admin) -> None:
    admin.post("/organizations", {"name": "acme"})
    a = admin.post("/oauth-configs", oauth_config(kind="oidc"))  # oidc needs an issuer
    assert a.status == 422 and "issuer" in {e["field"] for e in a.body["errors"]}
    a = admin.post("/oauth-configs", oauth_config(pkce="yes", colour=1, client_secret=None))
    fields = {e["field"]: e["detail"] for e in a.body["errors"]}
    assert fields == {"colour": "unknown field", "client_secret": "required", "pkce": "must be true or false"}
    admin.post("/oauth-configs", oauth_config())
    a = admin.post("/servers", server(issuer="ftp://x"))
    assert a.status == 422 and a.body["errors"][0]["field"] == "issuer"
    a = admin.post("/servers", server(oauth_config="missing"))
    assert a.status == 422 and a.body["errors"][0]["field"] == "oauth_config"
    a = admin.post("/servers", server(policy={"forever": 1}))
    assert a.status == 422 and a.body["errors"][0]["field"] == "policy"


def test_servers_conflicts_and_a_config_in_use(admin: Admin) -> None:
    _setup(admin)
    assert admin.post("/servers", server()).status == 409  # slug taken
    a = admin.post("/servers", server(slug="acme2", issuer="https://acme.example.com"))
    assert a.status == 409 and "server 'acme'" in a.body["detail"]  # its own organization's: named
    a = admin.delete("/oauth-configs/acme/github-main")
    assert a.status == 409 and "acme" in a.body["detail"]  # names the servers using it
    a = admin.patch("/servers/acme", {"organization": "other"})
    assert a.status == 422


def test_switching_a_servers_config_revokes_its_grants_and_says_how_many(admin: Admin) -> None:
    _setup(admin)
    admin.post("/oauth-configs", oauth_config(name="google", kind="google"))
    access, _ = with_tokens(admin.store, grant(tenant="acme", grant_id="g1"))
    a = admin.patch("/servers/acme", {"resource_name": "Acme tools"})  # an edit keeps them
    assert a.status == 200 and a.body["revoked_grants"] == 0
    a = admin.patch("/oauth-configs/acme/github-main", {"client_secret": "rotated"})  # so does a rotation
    assert admin.store.get_grant("acme", "g1") is not None
    a = admin.patch("/servers/acme", {"oauth_config": "google"})
    assert a.status == 200 and a.body["revoked_grants"] == 1 and a.body["oauth_config"] == "google"
    assert admin.store.get_grant("acme", "g1") is None
    assert admin.store.get_access_token("acme", access.token_hash) is None
    (event,) = [e for e in admin.get("/audit", event="admin.server_updated").body["items"]
                if e["detail"].get("oauth_config") == "google"]
    assert event["detail"]["revoked_grants"] == "1" and event["detail"]["previous_oauth_config"] == "github-main"


def test_pages_follow_their_cursor(admin: Admin) -> None:
    names = [f"org-{i:02d}" for i in range(7)]
    for n in names:
        admin.post("/organizations", {"name": n})
    seen, cursor = [], None
    while True:
        a = admin.get("/organizations", limit="3", **({"cursor": cursor} if cursor else {}))
        seen += [o["name"] for o in a.body["items"]]
        cursor = a.body["next_cursor"]
        if cursor is None:
            break
    assert seen == names


# -- one organization's token ---------------------------------------------------------------


def test_an_organizations_token_sees_nothing_of_another(admin: Admin) -> None:
    _setup(admin, "acme")
    _setup(admin, "globex")
    with_tokens(admin.store, grant(tenant="globex", grant_id="g-globex"))
    admin.store.save_client(client(tenant="globex", client_id="c-globex"))
    acme = org_token(admin, "acme")
    for path in ("/organizations/globex", "/oauth-configs/acme/nothing", "/oauth-configs/globex/github-main",
                 "/servers/globex", "/servers/globex/clients", "/servers/globex/clients/c-globex"):
        a = acme.get(path)
        assert a.status == 404, path
        # Exactly as for what does not exist: the same words, whatever the name.
        assert "globex" not in a.body["detail"] or a.body["detail"].startswith("no ")
    assert acme.get("/organizations/globex").body == acme.get("/organizations/nobody").body | {
        "detail": "no organization 'globex'"}
    for method, path, body in (("PATCH", "/servers/globex", {"resource_name": "x"}),
                               ("DELETE", "/servers/globex", None),
                               ("PATCH", "/oauth-configs/globex/github-main", {"client_id": "x"}),
                               ("DELETE", "/oauth-configs/globex/github-main", None),
                               ("PATCH", "/organizations/globex", {"display_name": "x"}),
                               ("DELETE", "/servers/globex/clients/c-globex", None),
                               ("DELETE", "/grants/globex/g-globex", None),
                               ("POST", "/oauth-configs", oauth_config(organization="globex", name="mine")),
                               ("POST", "/servers", server(slug="mine", organization="globex"))):
        assert acme.call(method, path, body).status == 404, (method, path)
    assert admin.store.get_grant("globex", "g-globex") is not None
    assert admin.store.get_client("globex", "c-globex") is not None
    # Lists hold its own records only.
    assert [o["name"] for o in acme.get("/organizations").body["items"]] == ["acme"]
    assert [s["slug"] for s in acme.get("/servers").body["items"]] == ["acme"]
    assert {c["organization"] for c in acme.get("/oauth-configs").body["items"]} == {"acme"}
    assert acme.get("/grants").body["items"] == []
    assert acme.get("/servers", organization="globex").status == 404
    assert all(e["organization"] in ("acme", None) and e["server"] in ("acme", None)
               for e in acme.get("/audit").body["items"])
    # Making or removing organizations is a global token's.
    assert acme.post("/organizations", {"name": "mine"}).status == 403
    assert acme.delete("/organizations/acme").status == 403
    # A place another organization's server holds is refused without its name.
    a = acme.post("/servers", server(slug="acme2", organization="acme", issuer="https://globex.example.com"))
    assert a.status == 409 and a.body["detail"] == \
        "it would answer where another server does (the same place, or beneath or above it)"


def test_actions_are_audited_with_their_actor(admin: Admin) -> None:
    acme_admin = None
    admin.post("/organizations", {"name": "acme"})
    acme_admin = org_token(admin, "acme")
    acme_admin.post("/oauth-configs", oauth_config())
    (token,) = [t for t in admin.store.list_admin_tokens() if t.organization == "acme"]
    (event,) = admin.get("/audit", event="admin.oauth_config_created").body["items"]
    assert event["actor"] == token.token_id and event["organization"] == "acme"
    assert event["detail"] == {"oauth_config": "github-main"}


# -- registered clients and grants ---------------------------------------------------------------


def test_clients_list_and_delete_revokes_their_grants(admin: Admin) -> None:
    _setup(admin)
    url_id = "https://app.example/oauth/client.json"  # a metadata document's id holds slashes
    for cid in ("c1", "c2", url_id):
        admin.store.save_client(client(tenant="acme", client_id=cid))
    access, _ = with_tokens(admin.store, grant(tenant="acme", grant_id="g1", client_id=url_id))
    a = admin.get("/servers/acme/clients", limit="2")
    assert [c["client_id"] for c in a.body["items"]] == ["c1", "c2"] and a.body["next_cursor"] == "c2"
    rest = admin.get("/servers/acme/clients", limit="2", cursor="c2").body
    assert [c["client_id"] for c in rest["items"]] == [url_id] and rest["next_cursor"] is None
    assert "secret_hash" not in json.dumps(a.body)
    encoded = "/servers/acme/clients/" + url_id.replace(":", "%3A").replace("/", "%2F")
    assert admin.get(encoded).body["client_id"] == url_id
    a = admin.delete(encoded)
    assert a.status == 200 and a.body["revoked_grants"] == 1
    assert admin.store.get_access_token("acme", access.token_hash) is None
    assert admin.delete(encoded).status == 404
    assert admin.get("/servers/nowhere/clients").status == 404


def test_grants_list_filters_and_revoke(admin: Admin) -> None:
    _setup(admin)
    with_tokens(admin.store, grant(tenant="acme", grant_id="g1", user_id="ada"))
    access, _ = with_tokens(admin.store, grant(tenant="acme", grant_id="g2", user_id="bob", client_id="c2"))
    assert [g["grant_id"] for g in admin.get("/grants").body["items"]] == ["g1", "g2"]
    assert [g["grant_id"] for g in admin.get("/grants", user_id="bob").body["items"]] == ["g2"]
    assert [g["grant_id"] for g in admin.get("/grants", client_id="c2", server="acme").body["items"]] == ["g2"]
    page = admin.get("/grants", limit="1").body
    assert page["next_cursor"] == "acme/g1"
    assert [g["grant_id"] for g in admin.get("/grants", cursor="acme/g1").body["items"]] == ["g2"]
    assert "up-at" not in json.dumps(page)  # never an upstream token
    a = admin.delete("/grants/acme/g2")
    assert a.status == 200 and a.body["revoked"]["user_id"] == "bob"
    assert admin.store.get_access_token("acme", access.token_hash) is None
    assert admin.delete("/grants/acme/g2").status == 404
    (event,) = admin.get("/audit", event="admin.grant_revoked").body["items"]
    assert event["user_id"] == "bob" and event["detail"] == {"grant_id": "g2"}


def test_audit_filters_and_pages(admin: Admin) -> None:
    for i in range(5):
        admin.post("/organizations", {"name": f"o{i}"})
    a = admin.get("/audit", limit="2")
    assert [e["organization"] for e in a.body["items"]] == ["o4", "o3"]  # newest first
    b = admin.get("/audit", limit="2", cursor=a.body["next_cursor"])
    assert [e["organization"] for e in b.body["items"]] == ["o2", "o1"]
    assert admin.get("/audit", since=str(T0 + 1)).body["items"] == []
    assert len(admin.get("/audit", until=str(T0 + 1)).body["items"]) == 5  # until: before that second
    assert admin.get("/audit", until=str(T0)).body["items"] == []
    assert admin.get("/audit", cursor="x").status == 422


def test_a_file_managed_server_is_shown_read_only(store: Any) -> None:
    from mcp_oauth_proxy.admin.api import AdminApi
    from mcp_oauth_proxy.admin.operations import Management
    from mcp_oauth_proxy.admin.tokens import new_token
    from mcp_oauth_proxy.directory import entry_of
    from support import tenant

    token, record = new_token(None, "root", T0)
    store.create_admin_token(token=record)
    admin = Admin(AdminApi(Management(store, [entry_of(tenant("filed"))], clock=lambda: T0)), store, token)
    (doc,) = admin.get("/servers").body["items"]
    assert doc["slug"] == "filed" and doc["managed"] == "file" and doc["read_only"] is True
    assert admin.patch("/servers/filed", {"resource_name": "x"}).status == 409
    assert admin.delete("/servers/filed").status == 409
    admin.post("/organizations", {"name": "acme"})
    assert org_token(admin, "acme").get("/servers/filed").status == 404


def test_a_database_that_fails_is_a_503(admin: Admin) -> None:
    from mcp_oauth_proxy.core.errors import StorageUnavailable

    def down(*args: Any, **kw: Any) -> Any:
        raise StorageUnavailable("gone")

    admin.api.management.store = type("Down", (), {"get_admin_token": down, "list_organizations": down})()
    a = admin.get("/organizations")
    assert a.status == 503 and a.headers["content-type"] == "application/problem+json"
