"""What a hostile review of the admin API found, each now refused: one
organization taking over another's server (its place written another way,
or beneath it), a server's slug reused to read or seed another
organization's clients and audit events, malformed input answered with a
500, and control characters that forge lines on an operator's terminal."""

from __future__ import annotations

from typing import Any

import pytest
from admin_client import Admin, oauth_config, org_token, server
from storage.storage_records import client

from mcp_oauth_proxy.directory import Directory, entry_of
from mcp_oauth_proxy.tenants_db import DatabaseTenants
from support import tenant


def _two_orgs(admin: Admin) -> tuple[Admin, Admin]:
    for org in ("alpha", "beta"):
        admin.post("/organizations", {"name": org})
        admin.post("/oauth-configs", oauth_config(organization=org, name="gh"))
    alpha, beta = org_token(admin, "alpha"), org_token(admin, "beta")
    made = alpha.post("/servers", server(slug="victim", organization="alpha", oauth_config="gh",
                                         issuer="https://shared.example/a", resource="https://shared.example/a/mcp"))
    assert made.status == 201, made.body
    return alpha, beta


@pytest.mark.parametrize(("issuer", "resource"), [
    ("https://shared.example/a/", "https://shared.example/a/mcp/"),  # a trailing slash
    ("HTTPS://SHARED.EXAMPLE/a", "https://shared.example:443/a/mcp"),  # case, the default port
    ("https://shared.example/a/inner", "https://shared.example/a/inner/mcp"),  # beneath its issuer
    ("https://shared.example/b", "https://shared.example/a/mcp/x"),  # beneath its resource
    ("https://shared.example", "https://shared.example/z/mcp"),  # above it, at the host's root
])
def test_a_server_is_refused_where_it_would_take_another_organizations_requests(admin: Admin, issuer: str,
                                                                                 resource: str) -> None:
    _, beta = _two_orgs(admin)
    a = beta.post("/servers", server(slug="aaa", organization="beta", oauth_config="gh", issuer=issuer,
                                     resource=resource))
    assert a.status == 409, a.body
    assert "victim" not in a.body["detail"]
    assert [s["slug"] for s in admin.get("/servers").body["items"]] == ["victim"]


@pytest.mark.parametrize(("field", "url"), [
    ("resource", "https://other.example/.well-known"),
    ("resource", "https://other.example/oauth"),
    ("issuer", "https://other.example/.well-known/x"),
    ("resource", "https://other.example"),  # the host's root: every request there
])
def test_a_server_may_not_take_the_paths_every_tenant_answers_at(admin: Admin, field: str, url: str) -> None:
    _two_orgs(admin)
    values = server(slug="odd", organization="alpha", oauth_config="gh", issuer="https://other.example/o",
                    resource="https://other.example/o/mcp")
    values[field] = url
    a = admin.post("/servers", values)
    assert a.status == 422 and a.body["errors"][0]["field"] == field, a.body


def test_a_server_beneath_a_file_tenants_path_is_refused_beneath_its_root_allowed(store: Any) -> None:
    from admin_client import T0

    from mcp_oauth_proxy.admin.api import AdminApi
    from mcp_oauth_proxy.admin.operations import Management
    from mcp_oauth_proxy.admin.tokens import new_token

    filed = [entry_of(tenant("filed", issuer="https://h.example/filed", resource="https://h.example/filed/mcp")),
             entry_of(tenant("root", issuer="https://r.example", resource="https://r.example/mcp"))]
    token, record = new_token(None, "root", T0)
    store.create_admin_token(token=record)
    admin = Admin(AdminApi(Management(store, filed, clock=lambda: T0)), store, token)
    admin.post("/organizations", {"name": "acme"})
    admin.post("/oauth-configs", oauth_config())
    a = admin.post("/servers", server(issuer="https://h.example/filed/oauth", resource="https://h.example/x/mcp"))
    assert a.status == 409 and "file-managed tenant 'filed'" in a.body["detail"]
    a = admin.post("/servers", server(issuer="https://r.example/beta", resource="https://r.example/beta/mcp"))
    assert a.status == 201, a.body


def test_servers_that_raced_into_each_others_place_are_neither_served(store: Any) -> None:
    """Two changes made at once pass each other's checks; the directory then
    serves neither rather than give one the other's requests."""
    from storage.storage_records import config, org
    from storage.storage_records import server as record

    store.create_organization(org())
    store.create_oauth_config(config())
    store.create_server(record("victim", issuer="https://h.example/a", resource="https://h.example/a/mcp"))
    store.create_server(record("aaa", issuer="https://h.example/a/", resource="https://h.example/a/mcp/"))
    store.create_server(record("other", issuer="https://h.example/o", resource="https://h.example/o/mcp"))
    directory = Directory(DatabaseTenants(store))
    assert [e.tenant.slug for e in directory.current.entries] == ["other"]


def test_a_reused_slug_inherits_neither_clients_nor_audit_events(admin: Admin) -> None:
    alpha, beta = _two_orgs(admin)
    admin.store.save_client(client(tenant="victim", client_id="alpha-app"))
    alpha.delete("/servers/victim/clients/alpha-app")  # an event of alpha's about its server
    admin.store.save_client(client(tenant="victim", client_id="alpha-app-2"))
    assert alpha.delete("/servers/victim").status == 200
    made = beta.post("/servers", server(slug="victim", organization="beta", oauth_config="gh",
                                        issuer="https://beta.example/v", resource="https://beta.example/v/mcp"))
    assert made.status == 201
    assert beta.get("/servers/victim/clients").body["items"] == []
    assert admin.store.get_client("victim", "alpha-app-2") is None
    assert all(e["organization"] == "beta" for e in beta.get("/audit").body["items"])
    assert beta.get("/audit", server="victim").body["items"][0]["event"] == "admin.server_created"
    assert len(beta.get("/audit", server="victim").body["items"]) == 1


def test_a_flow_event_belongs_to_the_organization_owning_the_server_then(admin: Admin) -> None:
    from mcp_oauth_proxy.core.effects import Audit
    from mcp_oauth_proxy.runtime import recorded

    alpha, beta = _two_orgs(admin)
    recorded(Audit("login_completed", "victim", "c", "ada"), 3600).apply(admin.store)
    alpha.delete("/servers/victim")
    beta.post("/servers", server(slug="victim", organization="beta", oauth_config="gh",
                                 issuer="https://beta.example/v", resource="https://beta.example/v/mcp"))
    recorded(Audit("login_completed", "victim", "c", "bob"), 3600).apply(admin.store)
    assert [e["user_id"] for e in alpha.get("/audit", event="login_completed").body["items"]] == ["ada"]
    assert [e["user_id"] for e in beta.get("/audit", event="login_completed").body["items"]] == ["bob"]


@pytest.mark.parametrize("query", [
    {"cursor": "\x1b[31m"}, {"limit": "²"}, {"limit": "1", "colour": "\x00"}, {"limit": "9" * 30},
])
def test_malformed_queries_are_422_not_500(admin: Admin, query: dict[str, str]) -> None:
    for path in ("/servers", "/audit", "/grants", "/organizations"):
        a = admin.get(path, **query)
        assert a.status == 422, (path, query, a.body)


def test_a_repeated_or_undecodable_query_is_422(admin: Admin) -> None:
    from mcp_oauth_proxy.core.http import Request
    from mcp_oauth_proxy.admin.api import PREFIX

    for raw in ("cursor=a&cursor=b", "cursor=%FF", "cursor=%00"):
        r = admin.api.handle(Request("GET", PREFIX + "/servers", raw, [("authorization", f"Bearer {admin.token}")],
                                     b"", "http"))
        assert r.status == 422, raw
    a = admin.get("/audit", since="²", cursor="99999999999999999999999999")
    assert a.status == 422


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/x", "http://127.0.0.1:abc/x", "http://[::1/x"])
def test_urls_that_do_not_parse_are_422(admin: Admin, url: str) -> None:
    _two_orgs(admin)
    for field in ("issuer", "resource", "backend"):
        values = server(slug="odd", organization="alpha", oauth_config="gh", issuer="https://o.example/o",
                        resource="https://o.example/o/mcp")
        values[field] = url
        a = admin.post("/servers", values)
        assert a.status == 422, (field, a.body)
    a = admin.post("/oauth-configs", oauth_config(organization="alpha", name="odd", kind="oidc", issuer=url))
    assert a.status == 422, a.body


@pytest.mark.parametrize("value", ["beta\nalpha\tALPHA (global)", "red\x1b[31m", "rtl\u202egnp.exe", "nul\x00"])
def test_control_characters_are_refused_in_every_text(admin: Admin, value: str) -> None:
    _two_orgs(admin)
    assert admin.patch("/organizations/beta", {"display_name": value}).status == 422
    assert admin.patch("/oauth-configs/alpha/gh", {"client_id": value}).status == 422
    assert admin.patch("/servers/victim", {"resource_name": value}).status == 422
    assert admin.get("/servers/" + value.replace("\x00", "%00").replace("\n", "%0A")).status == 404


def test_overlong_values_are_422(admin: Admin) -> None:
    _two_orgs(admin)
    long_url = "https://o.example/" + "x" * 600
    a = admin.post("/servers", server(slug="odd", organization="alpha", oauth_config="gh", issuer=long_url,
                                      resource=long_url + "/mcp"))
    assert a.status == 422
    assert admin.patch("/oauth-configs/alpha/gh", {"user_id_claim": "c" * 300}).status == 422
    assert admin.patch("/organizations/alpha", {"display_name": "d" * 5000}).status == 422


@pytest.mark.parametrize("name", ["x\x00", "X Y", "a" * 100])
def test_names_no_record_could_have_are_not_asked_for(admin: Admin, name: str) -> None:
    """PostgreSQL refuses a NUL in a string outright: such a name is simply not there."""
    _two_orgs(admin)
    assert admin.post("/oauth-configs", oauth_config(organization=name, name="x")).status == 404
    assert admin.post("/servers", server(slug="ok", organization=name)).status == 404
    assert admin.get("/grants", server=name.replace("\x00", "")).status == 404


def test_an_organization_has_at_most_so_many_servers(store: Any) -> None:
    # A review: one organization's admin made 500 servers, and every
    # replica's reload after any organization's change took 15 s.
    from admin_client import T0

    from mcp_oauth_proxy.admin.api import AdminApi
    from mcp_oauth_proxy.admin.operations import Management
    from mcp_oauth_proxy.admin.tokens import new_token

    token, record = new_token(None, "root", T0)
    store.create_admin_token(token=record)
    admin = Admin(AdminApi(Management(store, clock=lambda: T0, max_servers_per_organization=3)), store, token)
    alpha, beta = _two_orgs(admin)  # alpha has one
    for n in (2, 3):
        made = alpha.post("/servers", server(slug=f"a{n}", organization="alpha", oauth_config="gh",
                                             issuer=f"https://a{n}.example", resource=f"https://a{n}.example/mcp"))
        assert made.status == 201, made.body
    refused = alpha.post("/servers", server(slug="a4", organization="alpha", oauth_config="gh",
                                            issuer="https://a4.example", resource="https://a4.example/mcp"))
    assert refused.status == 409 and "3 servers" in refused.body["detail"], refused.body
    assert admin.post("/servers", server(slug="a5", organization="alpha", oauth_config="gh",
                                         issuer="https://a5.example", resource="https://a5.example/mcp")).status == 409
    # Another organization's are its own.
    assert beta.post("/servers", server(slug="b1", organization="beta", oauth_config="gh",
                                        issuer="https://b1.example", resource="https://b1.example/mcp")).status == 201
    # One deleted, one more may be made.
    assert alpha.delete("/servers/a2").status == 200
    assert alpha.post("/servers", server(slug="a4", organization="alpha", oauth_config="gh",
                                         issuer="https://a4.example", resource="https://a4.example/mcp")).status == 201


def test_field_values_beyond_reason_are_422_naming_the_field(admin: Admin) -> None:
    # A review: a policy's bad lifetime was a 409 (as if it clashed with
    # something), an empty client_secret was kept, 100,000 scopes were taken.
    admin.post("/organizations", {"name": "acme"})
    assert admin.post("/oauth-configs", oauth_config()).status == 201
    a = admin.post("/servers", {**server(), "policy": {"access_token_ttl": 0}})
    assert a.status == 422 and a.body["errors"][0]["field"] == "policy.access_token_ttl", a.body
    for field in ("client_secret", "client_id"):
        for blank in ("", "   "):
            a = admin.post("/oauth-configs", {**oauth_config(name="x"), field: blank})
            assert a.status == 422 and a.body["errors"][0]["field"] == field, a.body
    a = admin.patch("/oauth-configs/acme/github-main", {"client_secret": ""})
    assert a.status == 422 and a.body["errors"][0]["field"] == "client_secret", a.body
    a = admin.post("/oauth-configs", {**oauth_config(name="y"), "scopes": [f"s{i}" for i in range(101)]})
    assert a.status == 422 and a.body["errors"][0]["field"] == "scopes", a.body
    assert admin.post("/oauth-configs", {**oauth_config(name="z"), "scopes": [f"s{i}" for i in range(100)]}).status == 201
    # Each entry is as long as its kind needs: 100 scopes of 2,000 characters made 400 KB servers.
    a = admin.post("/oauth-configs", {**oauth_config(name="w"), "scopes": ["s" * 256]})
    assert a.status == 422 and a.body["errors"][0]["field"] == "scopes", a.body
    a = admin.post("/servers", {**server(), "scopes": ["mcp", "s" * 256]})
    assert a.status == 422 and a.body["errors"][0]["field"] == "scopes", a.body
