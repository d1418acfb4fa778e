"""The operators' console, as a browser without JavaScript uses it:
sign-in with an admin token (rate limited), the session cookie, CSRF and
Origin checks on every form, the security headers, the same rules as the
API shown next to their fields, escaping, and each page's action."""

from __future__ import annotations

from typing import Any

import pytest
from admin_client import SECRET, T0, Admin, oauth_config, org_token, server
from console_client import Browser, text
from storage.storage_records import client, grant, with_tokens

from mcp_oauth_proxy.admin.console import SIGN_IN_ATTEMPTS, Console
from mcp_oauth_proxy.admin.console_session import console_key
from mcp_oauth_proxy.admin.discovery_check import Check


@pytest.fixture
def browser(admin: Admin) -> Browser:
    checks = []

    def check(c: Any) -> Check:
        checks.append(c)
        return Check(True, "found at https://idp.example/.well-known/openid-configuration",
                     (("token_endpoint", "https://idp.example/token"),))

    console = Console(admin.api.management, console_key(b"k" * 32), check=check, clock=lambda: T0)
    return Browser(console)


def test_signing_in_and_out(admin: Admin, browser: Browser) -> None:
    assert browser.get("/admin/servers").status == 303  # to the sign-in page
    r = browser.sign_in("mcp_admin_wrong")
    assert r.status == 401 and "not a valid admin token" in text(r)
    r = browser.sign_in(admin.token)
    assert r.status == 303 and r.header("location") == "/admin/servers"
    (cookie,) = [v for k, v in r.headers if k == "set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=" in cookie
    assert admin.token not in cookie
    assert browser.get("/admin/servers").status == 200
    r = browser.post("/admin/sign-out", {})
    assert r.status == 303 and browser.cookies == {}
    assert browser.get("/admin/servers").status == 303


def test_a_cookie_copied_before_signing_out_is_signed_out_too(admin: Admin, browser: Browser) -> None:
    """A review: signing out only told the browser to drop its cookie; a
    copy taken before (a shared machine, a proxy's log) stayed good for the
    rest of its eight hours. The session now ends on the server."""
    browser.sign_in(admin.token)
    copied = dict(browser.cookies)
    assert browser.get("/admin/servers").status == 200
    assert browser.post("/admin/sign-out", {}).status == 303
    browser.cookies = copied
    assert browser.get("/admin/servers").status == 303  # to the sign-in page
    assert browser.post("/admin/organizations/+new", {"name": "evil"}).status == 401
    # Signing in again gives a session of its own, which works.
    browser.cookies = {}
    browser.sign_in(admin.token)
    assert browser.get("/admin/servers").status == 200


def test_the_cookie_is_host_bound_and_secure_on_https(admin: Admin, browser: Browser) -> None:
    from mcp_oauth_proxy.core.http import Request

    r = browser.console.handle(Request("POST", "/admin/sign-in", "", [
        ("host", "admin.test"), ("content-type", "application/x-www-form-urlencoded"),
        ("origin", "https://admin.test")], f"token={admin.token}".encode(), "https", "admin.test"))
    (cookie,) = [v for k, v in r.headers if k == "set-cookie"]
    assert cookie.startswith("__Host-mcp_admin_session=") and "; Secure" in cookie and "Path=/;" in cookie


def test_a_revoked_token_ends_its_sessions(admin: Admin, browser: Browser) -> None:
    admin.post("/organizations", {"name": "acme"})
    acme = org_token(admin, "acme")
    browser.sign_in(acme.token)
    assert browser.get("/admin/servers").status == 200
    (record,) = [t for t in admin.store.list_admin_tokens() if t.organization == "acme"]
    admin.store.delete_admin_token(token_id=record.token_id)
    assert browser.get("/admin/servers").status == 303


def test_sign_in_is_rate_limited_per_address(admin: Admin, browser: Browser) -> None:
    for _ in range(SIGN_IN_ATTEMPTS):
        assert browser.sign_in("mcp_admin_guess").status == 401
    r = browser.sign_in(admin.token)  # even the right one, until the minute is over
    assert r.status == 429 and r.header("retry-after")
    browser.remote = "10.0.0.2"
    assert browser.sign_in(admin.token).status == 303


def test_every_form_needs_its_csrf_token_and_our_origin(admin: Admin, browser: Browser) -> None:
    browser.sign_in(admin.token)
    browser.get("/admin/organizations")
    assert browser.post("/admin/organizations", {"name": "x1", "csrf": "forged"}).status == 403
    browser.get("/admin/organizations")
    assert browser.post("/admin/organizations", {"name": "x2"}, csrf=False).status == 403
    browser.get("/admin/organizations")
    assert browser.post("/admin/organizations", {"name": "x3"}, origin="https://evil.example").status == 403
    assert [o.name for o in admin.store.list_organizations()] == []
    browser.get("/admin/organizations")
    assert browser.post("/admin/organizations", {"name": "x4"}).status == 303
    assert [o.name for o in admin.store.list_organizations()] == ["x4"]


def test_pages_send_strict_security_headers(admin: Admin, browser: Browser) -> None:
    browser.sign_in(admin.token)
    for path in ("/admin/sign-in", "/admin/servers", "/admin/oauth-configs", "/admin/grants", "/admin/audit",
                 "/admin/organizations", "/admin/oauth-configs/+new", "/admin/servers/+new"):
        r = browser.get(path)
        assert r.status == 200, path
        csp = r.header("content-security-policy") or ""
        assert "default-src 'none'" in csp and "script-src" not in csp and "frame-ancestors 'none'" in csp
        assert r.header("x-frame-options") == "DENY" and r.header("cache-control") == "no-store"
        assert "<script" not in r.body.decode()


def test_a_configuration_made_edited_checked_and_deleted(admin: Admin, browser: Browser) -> None:
    admin.post("/organizations", {"name": "acme"})
    browser.sign_in(admin.token)
    browser.get("/admin/oauth-configs/+new")
    r = browser.post("/admin/oauth-configs/+new", {"organization": "acme", "name": "idp", "kind": "oidc",
                                                  "client_id": "cid", "client_secret": SECRET, "pkce": "on"})
    assert r.status == 422 and "missing (required for kind" in text(r)  # next to the issuer field
    assert 'id="d-issuer"' in r.body.decode() and SECRET not in r.body.decode()
    r = browser.post("/admin/oauth-configs/+new", {"organization": "acme", "name": "idp", "kind": "oidc",
                                                  "client_id": "cid", "client_secret": SECRET, "pkce": "on",
                                                  "issuer": "https://idp.example"})
    assert r.status == 303
    page = browser.get("/admin/oauth-configs/acme/idp")
    assert SECRET not in page.body.decode() and "set; leave empty to keep it" in text(page)
    r = browser.post("/admin/oauth-configs/acme/idp", {"kind": "oidc", "client_id": "cid2",
                                                       "issuer": "https://idp.example", "pkce": "on"})
    assert r.status == 303
    kept = admin.store.get_oauth_config("acme", "idp")
    assert kept.client_id == "cid2" and kept.client_secret == SECRET  # an empty secret field keeps it
    browser.get("/admin/oauth-configs/acme/idp")
    r = browser.post("/admin/oauth-configs/acme/idp/check", {})
    assert r.status == 200 and "https://idp.example/token" in text(r)
    browser.get("/admin/oauth-configs/acme/idp")
    assert browser.post("/admin/oauth-configs/acme/idp/delete", {}).status == 303
    assert admin.store.get_oauth_config("acme", "idp") is None


def test_switching_a_servers_configuration_says_what_it_revokes_first(admin: Admin, browser: Browser) -> None:
    admin.post("/organizations", {"name": "acme"})
    admin.post("/oauth-configs", oauth_config())
    admin.post("/oauth-configs", oauth_config(name="google", kind="google"))
    admin.post("/servers", server())
    access, _ = with_tokens(admin.store, grant(tenant="acme", grant_id="g1"))
    browser.sign_in(admin.token)
    page = browser.get("/admin/servers/acme")
    assert page.status == 200 and 'value="https://acme.example.com"' in page.body.decode()
    fields = {"oauth_config": "google", "issuer": "https://acme.example.com",
              "resource": "https://acme.example.com/mcp", "scopes": "mcp"}
    r = browser.post("/admin/servers/acme", fields)
    assert r.status == 200 and "revokes 1 live grant" in " ".join(text(r).split())
    assert admin.store.get_grant("acme", "g1") is not None  # nothing yet
    r = browser.post("/admin/servers/acme", {k: v for k, v in fields.items()} | {"confirmed": "google"})
    assert r.status == 303
    assert admin.store.get_server("acme").oauth_config == "google"
    assert admin.store.get_access_token("acme", access.token_hash) is None


def test_clients_and_grants_are_listed_escaped_and_taken_back(admin: Admin, browser: Browser) -> None:
    admin.post("/organizations", {"name": "acme"})
    admin.post("/oauth-configs", oauth_config())
    admin.post("/servers", server())
    admin.store.save_client(client(tenant="acme", client_id="c1", client_name="<script>alert(1)</script>"))
    with_tokens(admin.store, grant(tenant="acme", grant_id="g1", client_id="c1", user_id="<b>ada</b>"))
    browser.sign_in(admin.token)
    admin.store.save_client(client(tenant="acme", client_id="c-idle", client_name="Idle app"))
    page = browser.get("/admin/servers/acme/clients")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.body.decode() and "<script>" not in page.body.decode()
    assert "not yet" in text(page)  # the idle client never got a token
    used = {c["client_id"]: c["last_used_at"] for c in admin.get("/servers/acme/clients").body["items"]}
    assert used == {"c1": T0, "c-idle": None}
    page = browser.get("/admin/grants?server=acme")
    assert "&lt;b&gt;ada&lt;/b&gt;" in page.body.decode()
    assert browser.post("/admin/grants/acme/g1/revoke", {"server": "acme"}).status == 303
    assert admin.store.get_grant("acme", "g1") is None
    browser.get("/admin/servers/acme/clients")
    assert browser.post("/admin/servers/acme/clients/c1/delete", {}).status == 303
    assert admin.store.get_client("acme", "c1") is None
    page = browser.get("/admin/audit")
    assert "admin.client_deleted" in text(page) and "admin.grant_revoked" in text(page)


def test_a_machine_client_is_made_in_the_console_its_secret_shown_once(admin: Admin, browser: Browser) -> None:
    from mcp_oauth_proxy.core.context import token_hash

    admin.post("/organizations", {"name": "acme"})
    admin.post("/oauth-configs", oauth_config())
    admin.post("/servers", server())
    browser.sign_in(admin.token)
    assert "New machine client" in text(browser.get("/admin/servers/acme/clients"))
    form = browser.get("/admin/servers/acme/clients/+new")
    assert form.status == 200 and 'name="grant_client_credentials" checked' in form.body.decode()
    # Each rule next to its field: no grant; keys for private_key_jwt; JSON that is not.
    refused = browser.post("/admin/servers/acme/clients/+new", {"token_endpoint_auth_method": "client_secret_basic"})
    assert refused.status == 422 and "grant" in text(refused)
    browser.get("/admin/servers/acme/clients/+new")
    refused = browser.post("/admin/servers/acme/clients/+new", {
        "token_endpoint_auth_method": "private_key_jwt", "grant_client_credentials": "on", "jwks": "{not json",
        "client_name": "<b>robot</b>"})
    assert refused.status == 422 and "not JSON" in text(refused) and "&lt;b&gt;robot&lt;/b&gt;" in refused.body.decode()
    # JSON the API refuses is refused here too (a fourth review: a 500, and a NaN stored).
    for jwks in ('{"keys":' + "[" * 50000 + "]" * 50000 + "}", '{"keys":[{"kty":"EC","crv":NaN,"x":Infinity}]}'):
        browser.get("/admin/servers/acme/clients/+new")
        refused = browser.post("/admin/servers/acme/clients/+new", {
            "token_endpoint_auth_method": "private_key_jwt", "grant_client_credentials": "on", "jwks": jwks})
        assert refused.status == 422 and "not JSON" in text(refused), refused.status
    assert admin.store.list_clients(tenant="acme", limit=10) == []
    browser.get("/admin/servers/acme/clients/+new")
    made = browser.post("/admin/servers/acme/clients/+new", {
        "token_endpoint_auth_method": "client_secret_post", "grant_client_credentials": "on", "client_name": "Robot",
        "scope": "mcp"})
    assert made.status == 200 and made.header("cache-control") == "no-store"
    page = made.body.decode()
    client_id = page.split('id="client-id">')[1].split("<")[0]
    secret = page.split('id="client-secret">')[1].split("<")[0]
    (stored,) = admin.store.list_clients(tenant="acme", limit=10)
    assert stored.client_id == client_id and stored.client_name == "Robot" and stored.grant_types == (
        "client_credentials",) and stored.token_endpoint_auth_method == "client_secret_post"
    assert stored.secret_hash == token_hash(secret) and secret.startswith("mcp_secret_")
    # Never shown again: the list names the client, not its secret.
    listed = browser.get("/admin/servers/acme/clients").body.decode()
    assert client_id in listed and secret not in listed
    assert "admin.client_created" in text(browser.get("/admin/audit"))


def test_an_organizations_session_makes_machine_clients_of_its_own_servers_only(admin: Admin,
                                                                               browser: Browser) -> None:
    for org in ("acme", "globex"):
        admin.post("/organizations", {"name": org})
        admin.post("/oauth-configs", oauth_config(organization=org))
        admin.post("/servers", server(slug=org, organization=org))
    browser.sign_in(org_token(admin, "acme").token)
    assert browser.get("/admin/servers/globex/clients/+new").status == 404
    browser.get("/admin/servers/acme/clients/+new")
    assert browser.post("/admin/servers/globex/clients/+new", {
        "token_endpoint_auth_method": "client_secret_basic", "grant_client_credentials": "on"}).status == 404
    assert admin.store.list_clients(tenant="globex", limit=10) == []


def test_the_server_list_shows_the_files_servers_beside_the_databases(admin: Admin) -> None:
    """A second review: with a tenant in the configuration file, the page
    sign-in lands on answered 500 to a global admin (its record lacked the
    OAuth configuration the list shows)."""
    import attrs

    from mcp_oauth_proxy.directory import Entry
    from mcp_oauth_proxy.upstream.providers import NotReady
    from support import tenant

    admin.post("/organizations", {"name": "acme"})
    admin.post("/oauth-configs", oauth_config())
    admin.post("/servers", server())
    files = (Entry(tenant("from-file", issuer="https://file.example", resource="https://file.example/mcp"),
                   NotReady("-")),)
    management = attrs.evolve(admin.api.management, file_tenants=files)
    browser = Browser(Console(management, console_key(b"k" * 32), clock=lambda: T0))
    browser.sign_in(admin.token)
    page = browser.get("/admin/servers")
    assert page.status == 200, text(page)
    assert "from-file" in text(page) and "file (read-only)" in text(page) and "acme" in text(page)


def test_an_organizations_session_sees_only_its_own(admin: Admin, browser: Browser) -> None:
    for org in ("acme", "globex"):
        admin.post("/organizations", {"name": org})
        admin.post("/oauth-configs", oauth_config(organization=org))
        admin.post("/servers", server(slug=org, organization=org))
    browser.sign_in(org_token(admin, "acme").token)
    assert "globex" not in text(browser.get("/admin/servers"))
    assert browser.get("/admin/servers/globex").status == 404
    assert browser.get("/admin/oauth-configs/globex/github-main").status == 404
    browser.get("/admin/grants")
    assert browser.post("/admin/servers/globex/delete", {}).status == 404
    assert admin.store.get_server("globex") is not None


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "FROB", "HEAD"])
def test_methods_other_than_get_and_post_are_refused_before_acting(admin: Admin, browser: Browser,
                                                                   method: str) -> None:
    admin.post("/organizations", {"name": "acme"})
    admin.post("/oauth-configs", oauth_config())
    admin.post("/servers", server())
    browser.sign_in(admin.token)
    r = browser._send(method, "/admin/servers/acme/delete", headers=(("origin", "http://evil.example"),))
    assert r.status == 405 and r.header("allow") == "GET, POST"
    assert admin.store.get_server("acme") is not None


def test_odd_input_is_never_a_500(admin: Admin, browser: Browser) -> None:
    assert browser.get("/admin/sign-in?notice=a&notice=b").status == 200
    assert browser.get("/admin/sign-in?notice=%ff").status == 200
    browser.cookies["mcp_admin_session"] = "a.b.c.\u00e9"
    assert browser.get("/admin/servers").status == 303
    browser.cookies.clear()
    browser.sign_in(admin.token)
    browser.get("/admin/organizations")
    assert browser.post("/admin/organizations", {"name": "x", "csrf": "\u00e9"}).status == 403


def test_a_server_named_new_is_still_reachable(admin: Admin, browser: Browser) -> None:
    admin.post("/organizations", {"name": "acme"})
    admin.post("/oauth-configs", oauth_config())
    assert admin.post("/servers", server(slug="new")).status == 201
    browser.sign_in(admin.token)
    page = browser.get("/admin/servers/new")
    assert page.status == 200 and 'value="https://new.example.com"' in page.body.decode()


def test_behind_a_trusted_tls_proxy_the_console_sees_its_https_origin(admin: Admin) -> None:
    import anyio
    import httpx

    from mcp_oauth_proxy.admin.asgi import AdminApp
    from mcp_oauth_proxy.adapters.site import Site
    from mcp_oauth_proxy.storage.memory import MemoryStore

    site = Site([], MemoryStore(), b"k" * 32, trusted_proxies=["127.0.0.1"])
    console = Console(admin.api.management, console_key(b"k" * 32), clock=lambda: T0)
    app = AdminApp(admin.api, site, console)

    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://admin.internal") as http:
            return await http.post("/admin/sign-in", data={"token": admin.token}, headers={
                "origin": "https://admin.example", "x-forwarded-proto": "https", "x-forwarded-host": "admin.example"})

    answer = anyio.run(main)
    assert answer.status_code == 303
    assert answer.headers["set-cookie"].startswith("__Host-mcp_admin_session=")
