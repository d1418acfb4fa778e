"""The whole flow through the real WSGI app and guard (httpx.WSGITransport),
with the upstream answered by a LocalIdP over real HTTP."""

from __future__ import annotations

from typing import Any

import httpx
from local_idp import LocalIdP
from oauth_walk import bearer, connections, disconnect, drive, login, redeem, register, tokens
from proxy_apps import site, wsgi_app
from support import ServerClock

ISSUER, RESOURCE = "http://acme.test", "http://acme.test/mcp"


def client(app: Any, host: str = "acme.test", peer: str = "127.0.0.1") -> httpx.Client:
    transport = httpx.WSGITransport(app=app, remote_addr=peer)
    return httpx.Client(transport=transport, base_url=f"http://{host}", follow_redirects=False)


def test_whole_flow(idp: LocalIdP, server_clock: ServerClock) -> None:
    idp.expires_in = 30
    with client(wsgi_app(site(idp))) as c:
        client_id, tok = drive(tokens(ISSUER, RESOURCE), c)
        server_clock.advance(15)  # half its life gone: the getter refreshes the upstream token
        seen = c.get("/mcp", **bearer(tok["access_token"]))
        assert seen.status_code == 200, seen.text
        body = seen.json()
        assert body["user_id"] == ("user-42" if idp.shape == "oidc" else "4242")
        assert body["client_id"] == client_id and body["upstream_token"] == "idp-at-2"

        r = c.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": tok["refresh_token"],
                                          "client_id": client_id})
        assert r.status_code == 200, r.text
        new = r.json()
        assert c.get("/mcp", **bearer(new["access_token"])).status_code == 200
        assert c.post("/oauth/revoke", data={"token": new["refresh_token"], "client_id": client_id}).status_code == 200
        refused = c.get("/mcp", **bearer(new["access_token"]))
        assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["www-authenticate"]


def test_a_person_disconnects_a_client_on_the_connections_page(idp: LocalIdP) -> None:
    with client(wsgi_app(site(idp))) as c:
        client_id, tok = drive(tokens(ISSUER, RESOURCE), c)
        assert c.get("/mcp", **bearer(tok["access_token"])).status_code == 200
        page = drive(connections(ISSUER), c)
        assert "<h2>Walker</h2>" in page.text and client_id in page.text
        after = drive(disconnect(ISSUER, page), c)
        assert "Walker" not in after.text
        refused = c.get("/mcp", **bearer(tok["access_token"]))
        assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["www-authenticate"]


def test_two_tenants_unknown_host_and_proxies(oidc_idp: LocalIdP) -> None:
    app = wsgi_app(site(oidc_idp, ("acme", "globex"), trusted_proxies=["10.0.0.0/8"]))
    with client(app, "acme.test") as acme, client(app, "globex.test") as globex:
        client_id, tok = drive(tokens(ISSUER, RESOURCE), acme)
        assert globex.get("/mcp", **bearer(tok["access_token"])).status_code == 401
        other = drive(register(ISSUER), acme)
        got = drive(login(ISSUER, RESOURCE, other["client_id"]), acme)
        assert drive(redeem("http://globex.test", other["client_id"], got["code"]), globex).status_code in (400, 401)
        assert drive(redeem(ISSUER, other["client_id"], got["code"]), acme).status_code == 200
    with client(app, "other.test") as other_host:
        r = other_host.get("/.well-known/oauth-authorization-server")
        assert r.status_code == 404 and r.json()["error"] == "not_found"
    forwarded = {"x-forwarded-host": "globex.test"}
    with client(app, "acme.test", peer="192.0.2.7") as untrusted:
        assert untrusted.get("/.well-known/oauth-authorization-server", headers=forwarded).json()["issuer"] == ISSUER
    with client(app, "internal.lan", peer="10.9.9.9") as proxy:
        r = proxy.get("/.well-known/oauth-authorization-server", headers=forwarded)
        assert r.json()["issuer"] == "http://globex.test"


def test_large_body_is_413(oidc_idp: LocalIdP) -> None:
    with client(wsgi_app(site(oidc_idp, max_body=1000))) as c:
        r = c.post("/oauth/register", json={"redirect_uris": ["http://127.0.0.1/cb"], "pad": "x" * 2000})
        assert r.status_code == 413 and r.json()["error"] == "invalid_request"
