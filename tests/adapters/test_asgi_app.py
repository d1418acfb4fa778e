"""The whole flow through the real ASGI app and guard, on asyncio and trio,
with the upstream answered by a LocalIdP over real HTTP."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from local_idp import LocalIdP
from oauth_walk import bearer, connections, disconnect, drive_async, login, redeem, register, tokens
from proxy_apps import asgi_app, site
from support import ServerClock

from mcp_oauth_proxy.storage.memory import MemoryStore

pytestmark = pytest.mark.anyio
ISSUER, RESOURCE = "http://acme.test", "http://acme.test/mcp"


def client(app: Any, host: str = "acme.test", peer: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url=f"http://{host}", follow_redirects=False)


async def test_whole_flow(idp: LocalIdP, server_clock: ServerClock, anyio_backend: str) -> None:
    idp.expires_in = 30
    app = asgi_app(site(idp))
    async with client(app) as c:
        client_id, tok = await drive_async(tokens(ISSUER, RESOURCE), c)
        assert tok["access_token"].startswith("mcp_at_") and tok["token_type"].lower() == "bearer"
        server_clock.advance(15)  # half its life gone: the upstream token is due for a refresh

        seen = await c.get("/mcp", **bearer(tok["access_token"]))
        assert seen.status_code == 200, seen.text
        body = seen.json()
        assert body["user_id"] == ("user-42" if idp.shape == "oidc" else "4242")
        assert body["client_id"] == client_id and body["scopes"] == ["mcp"] and body["tenant"] == "acme"
        # idp-at-1 came with the login; the getter refreshed it through the IdP.
        assert body["upstream_token"] == "idp-at-2"

        r = await c.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": tok["refresh_token"],
                                                "client_id": client_id})
        assert r.status_code == 200, r.text
        new = r.json()
        assert new["access_token"] != tok["access_token"]
        assert (await c.get("/mcp", **bearer(new["access_token"]))).status_code == 200

        r = await c.post("/oauth/revoke", data={"token": new["refresh_token"], "client_id": client_id})
        assert r.status_code == 200
        refused = await c.get("/mcp", **bearer(new["access_token"]))
        assert refused.status_code == 401
        challenge = refused.headers["www-authenticate"]
        assert 'error="invalid_token"' in challenge
        assert 'resource_metadata="http://acme.test/.well-known/oauth-protected-resource/mcp"' in challenge
        r = await c.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": new["refresh_token"],
                                                "client_id": client_id})
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_a_person_disconnects_a_client_on_the_connections_page(idp: LocalIdP, anyio_backend: str) -> None:
    async with client(asgi_app(site(idp))) as c:
        client_id, tok = await drive_async(tokens(ISSUER, RESOURCE), c)
        assert (await c.get("/mcp", **bearer(tok["access_token"]))).status_code == 200
        page = await drive_async(connections(ISSUER), c)
        assert "<h2>Walker</h2>" in page.text and client_id in page.text
        after = await drive_async(disconnect(ISSUER, page), c)
        assert "Walker" not in after.text
        refused = await c.get("/mcp", **bearer(tok["access_token"]))
        assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["www-authenticate"]


async def test_guard_challenge_and_resource_metadata(oidc_idp: LocalIdP, anyio_backend: str) -> None:
    async with client(asgi_app(site(oidc_idp))) as c:
        r = await c.get("/mcp")
        assert r.status_code == 401 and r.json() == {}  # RFC 6750 §3.1: no error code without credentials
        assert r.headers["www-authenticate"].startswith('Bearer resource_metadata="http://acme.test/.well-known/')
        r = await c.get("/mcp", **bearer("mcp_at_forged"))
        assert r.status_code == 401 and r.json()["error"] == "invalid_token"
        doc = (await c.get("/.well-known/oauth-protected-resource/mcp")).json()
        assert doc["resource"] == RESOURCE and doc["authorization_servers"] == [ISSUER]
        meta = (await c.get("/.well-known/oauth-authorization-server")).json()
        assert meta["issuer"] == ISSUER and meta["token_endpoint"] == "http://acme.test/oauth/token"


async def test_two_tenants_are_apart(oidc_idp: LocalIdP, anyio_backend: str) -> None:
    app = asgi_app(site(oidc_idp, ("acme", "globex")))
    async with client(app, "acme.test") as acme, client(app, "globex.test") as globex:
        client_id, tok = await drive_async(tokens(ISSUER, RESOURCE), acme)
        # Acme's access token does not open globex's resource.
        assert (await globex.get("/mcp", **bearer(tok["access_token"]))).status_code == 401
        assert (await acme.get("/mcp", **bearer(tok["access_token"]))).status_code == 200
        # Nor does its refresh token, its client, or a fresh code of it work there.
        r = await globex.post("/oauth/token", data={"grant_type": "refresh_token",
                                                    "refresh_token": tok["refresh_token"], "client_id": client_id})
        assert r.status_code in (400, 401)
        other = await drive_async(register(ISSUER), acme)
        got = await drive_async(login(ISSUER, RESOURCE, other["client_id"]), acme)
        r = await drive_async(redeem("http://globex.test", other["client_id"], got["code"]), globex)
        assert r.status_code in (400, 401) and "access_token" not in r.text
        page = await globex.get("/oauth/authorize", params={"client_id": client_id, "response_type": "code"})
        assert page.status_code == 400 and "location" not in page.headers
        # The code was not spent by the refused attempt.
        assert (await drive_async(redeem(ISSUER, other["client_id"], got["code"]), acme)).status_code == 200


async def test_unknown_host_is_404(oidc_idp: LocalIdP, anyio_backend: str) -> None:
    async with client(asgi_app(site(oidc_idp)), "other.test") as c:
        for path in ("/.well-known/oauth-authorization-server", "/mcp", "/oauth/token"):
            r = await c.get(path)
            assert r.status_code == 404 and r.json()["error"] == "not_found", path


async def test_forwarded_host_only_from_trusted_proxies(oidc_idp: LocalIdP, anyio_backend: str) -> None:
    app = asgi_app(site(oidc_idp, ("acme", "globex"), trusted_proxies=["10.0.0.0/8"]))
    forwarded = {"x-forwarded-host": "globex.test", "x-forwarded-proto": "http"}
    async with client(app, "acme.test", peer="192.0.2.7") as untrusted:
        r = await untrusted.get("/.well-known/oauth-authorization-server", headers=forwarded)
        assert r.json()["issuer"] == "http://acme.test"
    async with client(app, "internal.lan", peer="10.1.2.3") as proxy:
        r = await proxy.get("/.well-known/oauth-authorization-server", headers=forwarded)
        assert r.json()["issuer"] == "http://globex.test"
        # A client-sent value before the proxy's own does not count.
        r = await proxy.get("/.well-known/oauth-authorization-server",
                            headers={"x-forwarded-host": "evil.test, acme.test"})
        assert r.json()["issuer"] == "http://acme.test"


async def test_large_body_is_413(oidc_idp: LocalIdP, anyio_backend: str) -> None:
    async with client(asgi_app(site(oidc_idp, max_body=1000))) as c:
        r = await c.post("/oauth/register", json={"redirect_uris": ["http://127.0.0.1/cb"], "pad": "x" * 2000})
        assert r.status_code == 413 and r.json()["error"] == "invalid_request"
        # A streamed body without Content-Length is cut off too.
        async def chunks() -> Any:
            for _ in range(5):
                yield b"x" * 400

        r = await c.post("/oauth/token", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 413


SECRET = "hunter" + "2"  # not spelled out: traceback lines quote the source


class BrokenStore(MemoryStore):
    def get_client(self, tenant: str, client_id: str) -> Any:
        raise RuntimeError("db said: password=" + SECRET)


async def test_unexpected_error_is_500_without_detail(oidc_idp: LocalIdP, anyio_backend: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    s = site(oidc_idp)
    s.store = BrokenStore()
    app = asgi_app(s)
    caplog.set_level(logging.ERROR, logger="mcp_oauth_proxy")
    async with client(app) as c:
        r = await c.post("/oauth/token", data={"grant_type": "authorization_code", "code": "x", "client_id": "c1"})
        assert r.status_code == 500
        assert r.json() == {"error": "server_error", "error_description": "an unexpected error occurred"}
        # The app keeps serving.
        assert (await c.get("/.well-known/oauth-authorization-server")).status_code == 200
    assert any("RuntimeError" in rec.getMessage() for rec in caplog.records)
    assert SECRET not in caplog.text and SECRET not in r.text
