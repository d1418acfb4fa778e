"""An organization's admin token names its servers' backends only where the
operator allows it (``server.organization_backends``, by organization): a server's backend is
where the forwarder sends requests and whose answers it passes back, so a
backend of an organization's choosing read any address the proxy reaches
(found by a review: an organization token pointed a server at the admin
listener and read its OpenAPI document through /mcp); nor where another
organization's may, whose backend believes the X-MCP-User it is sent (a
second review). A global token, the CLI and the configuration file are the
operator's, and name any."""

from __future__ import annotations

from typing import Any

import pytest
from admin_client import T0, Admin, oauth_config, org_token, server

from mcp_oauth_proxy import config as config_mod
from mcp_oauth_proxy.admin.api import AdminApi
from mcp_oauth_proxy.admin.operations import Management, backend_allowed
from mcp_oauth_proxy.admin.tokens import new_token

ALLOWED = ("https://mcp.internal.example/tools/", "http://10.0.3.7:9000")
OTHERS = ("https://beta.internal.example/secret-backend",)


def _admin(store: Any, allowed: tuple[str, ...]) -> tuple[Admin, Admin]:
    token, record = new_token(None, "root", T0)
    store.create_admin_token(token=record)
    admin = Admin(AdminApi(Management(store, clock=lambda: T0,
                                      organization_backends={"acme": list(allowed), "beta": list(OTHERS)})),
                  store, token)
    for name in ("acme", "beta"):
        admin.post("/organizations", {"name": name})
    assert admin.post("/oauth-configs", oauth_config()).status == 201
    return admin, org_token(admin, "acme")


@pytest.mark.parametrize("backend", ["http://127.0.0.1:8001/admin/api/v1/openapi.json",
                                     "http://169.254.169.254/latest/meta-data", "https://mcp.example/mcp"])
def test_with_no_list_an_organization_names_no_backend(store: Any, backend: str) -> None:
    _, acme = _admin(store, ())
    made = acme.post("/servers", server(backend=backend))
    assert made.status == 403, made.body
    assert "server.organization_backends" in made.body["detail"]
    assert "beta.internal" not in made.body["detail"]  # another organization's list is not told
    assert acme.get("/servers").body["items"] == []


def test_an_organization_may_not_name_another_organizations_backend(store: Any) -> None:
    _, acme = _admin(store, ALLOWED)
    made = acme.post("/servers", server(backend=OTHERS[0] + "/mcp"))
    assert made.status == 403, made.body
    assert "beta.internal" not in made.body["detail"] and "mcp.internal.example/tools/" in made.body["detail"]


def test_an_organization_may_not_change_its_servers_backend_to_one_not_allowed(store: Any) -> None:
    admin, acme = _admin(store, ALLOWED)
    assert acme.post("/servers", server(backend="https://mcp.internal.example/tools/a")).status == 201
    changed = acme.patch("/servers/acme", {"backend": "http://127.0.0.1:8001/"})
    assert changed.status == 403, changed.body
    assert admin.get("/servers/acme").body["backend"] == "https://mcp.internal.example/tools/a"
    # Taking it away is always its own to do; so is changing anything else.
    assert acme.patch("/servers/acme", {"resource_name": "Tools"}).status == 200
    assert acme.patch("/servers/acme", {"backend": None}).status == 200


@pytest.mark.parametrize("backend", [
    "https://mcp.internal.example/tools/a", "https://MCP.internal.example:443/tools/x/y",
    "http://10.0.3.7:9000/mcp", "http://10.0.3.7:9000",
])
def test_an_organization_names_a_backend_beneath_one_allowed(store: Any, backend: str) -> None:
    _, acme = _admin(store, ALLOWED)
    made = acme.post("/servers", server(backend=backend))
    assert made.status == 201, made.body


@pytest.mark.parametrize("backend", [
    "https://mcp.internal.example/toolsx",  # not beneath /tools/
    "https://mcp.internal.example/tools/../admin",  # out again by a dot segment
    "https://mcp.internal.example/tools/%2e%2e/admin",
    "https://mcp.internal.example/tools/a%2f..%2fb",
    "http://mcp.internal.example/tools/a",  # another scheme
    "https://mcp.internal.example:8443/tools/a",  # another port
    "https://user@mcp.internal.example/tools/a",  # user info
    "https://mcp.internal.example.evil.example/tools/a",
    "http://10.0.3.7:9001/mcp", "http://10.0.3.7/mcp", "http://10.0.3.70:9000/mcp",
    "https://mcp.internal.example/tools/a?x=1", "https://mcp.internal.example/tools/a#f",
    # A space or a character beyond ASCII would go into the request line as it is (a second review).
    "https://mcp.internal.example/tools/ HTTP/1.0", "https://mcp.internal.example/tools/\uff0e\uff0e/x",
    "https://mcp.internal.example/tools/\u2025/x", "https://mcp.internal.example/tools/a\tb",
])
def test_an_organization_may_not_name_a_backend_elsewhere(store: Any, backend: str) -> None:
    _, acme = _admin(store, ALLOWED)
    made = acme.post("/servers", server(backend=backend))
    assert made.status in (403, 422), made.body
    assert made.status == 403 or made.body["errors"][0]["field"] == "backend"


def test_a_global_token_names_any_backend(store: Any) -> None:
    admin, _ = _admin(store, ())
    assert admin.post("/servers", server(backend="http://127.0.0.1:9000/mcp")).status == 201


def test_the_list_is_checked_in_the_configuration() -> None:
    def problems(allowed: list[str]) -> list[str]:
        try:
            config_mod.parse({"server": {"organization_backends": {"acme": allowed}, "database": "sqlite:///x.db"}})
        except config_mod.ConfigError as error:
            return [p for p in error.problems if "organization_backends" in p]
        return []

    assert problems(["https://mcp.internal.example/tools/", "http://10.0.3.7:9000"]) == []
    for bad in ("mcp.internal.example", "ftp://x.example/", "https://u@x.example/", "https://x.example/?q",
                "https://x.example/a/../b"):
        assert problems([bad]) and problems([bad])[0].startswith("server.organization_backends.acme[0]: "), bad


def test_backend_allowed_compares_urls_not_strings() -> None:
    assert backend_allowed("https://mcp.internal.example/tools", ALLOWED)
    assert not backend_allowed("https://mcp.internal.example/", ALLOWED)


@pytest.mark.parametrize("backend", ["http://127.0.0.1:9000/mcp HTTP/1.0", "http://127.0.0.1:9000/caf\u00e9"])
def test_any_backend_is_written_as_a_uri(store: Any, backend: str) -> None:
    admin, _ = _admin(store, ())
    made = admin.post("/servers", server(backend=backend))
    assert made.status == 422 and made.body["errors"][0]["field"] == "backend", made.body
