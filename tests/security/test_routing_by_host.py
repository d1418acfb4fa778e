"""The standalone server sends a path some tenant protects through the
guard, whatever the host; a tenant of another host whose OAuth endpoints
live at that path must still get them (found by the admin API's review: a
server on one host with resource ``/filed/oauth`` turned another host's
registration into 401s)."""

from __future__ import annotations

import anyio
import httpx

from mcp_oauth_proxy import config as config_mod
from mcp_oauth_proxy.app import build_app


def _tenant(slug: str, issuer: str, resource: str) -> dict:
    return {"slug": slug, "issuer": issuer, "resource": resource,
            "upstream": {"kind": "github", "client_id": "c", "client_secret": "s"}}


def test_a_path_protected_on_one_host_is_an_oauth_endpoint_on_another() -> None:
    config = config_mod.parse({"tenants": [
        _tenant("filed", "https://a.example/filed", "https://a.example/filed/mcp"),
        _tenant("other", "https://b.example/x", "https://b.example/filed/oauth"),
    ]})
    app = build_app(config, backend=_ok)

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=10) as http:
            registered = await http.post("https://a.example/filed/oauth/register", json={
                "redirect_uris": ["http://127.0.0.1:5000/cb"], "token_endpoint_auth_method": "none"})
            assert registered.status_code == 201, registered.text
            # On its own host the path is protected still.
            guarded = await http.post("https://b.example/filed/oauth/register", json={})
            assert guarded.status_code == 401
            # And the other tenant's resource still is, on its host.
            assert (await http.post("https://a.example/filed/mcp", json={})).status_code == 401

    anyio.run(main)


async def _ok(scope: dict, receive: object, send: object) -> None:
    if scope["type"] == "lifespan":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"backend"})  # type: ignore[operator]
