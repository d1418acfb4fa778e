"""An MCP server made with the official ``mcp`` SDK (``MCPServer``, streamable
HTTP) protected by our ``BearerGuard``, with our OAuth endpoints beside it on
the same host, served by Hypercorn on 127.0.0.1: an MCP server as a developer
would embed the proxy in it.

Run by tests/integration/test_mcp_sdk_client.py as its own process:

    python mcp_server.py CONFIG.toml USERINFO_URL [--trio] [--server-app]

CONFIG.toml is the proxy's configuration (one tenant; ``server.listen`` is
where to serve). The ``whoami`` tool answers with the principal the guard
put in the ASGI scope, and with the person's profile at the identity
provider, fetched with the upstream token the guard hands the app.

By default the OAuth app and the guarded MCP app are put side by side here
(embedding); with ``--server-app`` the MCP app is the backend of the
standalone server's app (``mcp_oauth_proxy.app.build_app``).
"""

from __future__ import annotations

import argparse
import logging
import signal
from typing import Any

import anyio
import httpx
from hypercorn.config import Config as HypercornConfig
from mcp.server.mcpserver import Context, MCPServer

from mcp_oauth_proxy import config as config_mod
from mcp_oauth_proxy.adapters.asgi import BearerGuard, OAuthApp
from mcp_oauth_proxy.adapters.site import PRINCIPAL_KEY, UPSTREAM_TOKEN_KEY
from mcp_oauth_proxy.app import build_app, build_site

_OAUTH_PREFIXES = ("/oauth/", "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")


def mcp_app(userinfo_url: str) -> Any:
    server = MCPServer("whoami")

    @server.tool()
    async def whoami(ctx: Context) -> dict[str, Any]:
        """Who is calling: the principal our guard authenticated."""
        scope = ctx.request_context.request.scope
        principal = scope[PRINCIPAL_KEY]
        token = await scope[UPSTREAM_TOKEN_KEY]()
        async with httpx.AsyncClient(trust_env=False) as http:
            profile = await http.get(userinfo_url, headers={"authorization": f"Bearer {token}"})
        return {
            "user_id": principal.user_id,
            "client_id": principal.client_id,
            "scopes": list(principal.scopes),
            "email": profile.json().get("email") if profile.status_code == 200 else None,
        }

    return server.streamable_http_app(streamable_http_path="/mcp")


def build(config: config_mod.Config, userinfo_url: str, server_app: bool) -> Any:
    if server_app:
        return build_app(config, backend=mcp_app(userinfo_url))
    site = build_site(config)
    guarded = BearerGuard(mcp_app(userinfo_url), site)
    oauth = OAuthApp(site)

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(_OAUTH_PREFIXES):
            return await oauth(scope, receive, send)
        # Everything else, lifespan included, goes to the guarded MCP app.
        return await guarded(scope, receive, send)

    return app


async def main(config_path: str, userinfo_url: str, use_trio: bool, server_app: bool) -> None:
    config = config_mod.load(config_path)
    app = build(config, userinfo_url, server_app)
    hyper = HypercornConfig()
    hyper.bind = [config.server.listen]
    hyper.accesslog = None
    hyper.graceful_timeout = 2
    # Longer than the client's pool keeps an idle connection (httpx: 5 s), so
    # the server never closes one just as the client sends on it (equal
    # timeouts race: "Server disconnected without sending a response").
    hyper.keep_alive_timeout = 30

    async def until_signalled() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                return

    if use_trio:
        from hypercorn.trio import serve
    else:
        from hypercorn.asyncio import serve  # type: ignore[assignment]
    await serve(app, hyper, shutdown_trigger=until_signalled)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("userinfo_url")
    parser.add_argument("--trio", action="store_true")
    parser.add_argument("--server-app", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    anyio.run(main, args.config, args.userinfo_url, args.trio, args.server_app, backend="trio" if args.trio else "asyncio")
