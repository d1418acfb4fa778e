"""An MCP server made with the official ``mcp`` SDK (a Starlette app speaking
streamable HTTP), protected by mcp-oauth-proxy's ``BearerGuard``, with the
proxy's OAuth endpoints beside it: one process, one port.

    pip install mcp-oauth-proxy mcp
    export GITHUB_CLIENT_ID=... GITHUB_CLIENT_SECRET=...   # a GitHub OAuth app
    python examples/starlette_mcp_server.py --config examples/mcp-oauth-proxy.toml

Then connect an MCP client to http://127.0.0.1:8000/mcp: it gets a 401,
discovers this server's OAuth metadata, registers, and sends the person
through the consent page to GitHub. The ``whoami`` tool answers with the
person the guard let in and their GitHub login, read from the GitHub API
with the person's upstream token (the MCP client never sees that token).
``GITHUB_API_URL`` points the tool at another API base (tests use a local one).
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import Any, MutableMapping
from urllib.parse import urlsplit

import anyio
import httpx
from hypercorn.config import Config as HypercornConfig
from mcp.server.mcpserver import Context, MCPServer

from mcp_oauth_proxy import config as config_mod
from mcp_oauth_proxy.adapters.asgi import ASGIApp, BearerGuard, OAuthApp, Receive, Scope, Send
from mcp_oauth_proxy.adapters.site import PRINCIPAL_KEY, UPSTREAM_TOKEN_KEY
from mcp_oauth_proxy.app import build_site
from mcp_oauth_proxy.logs import configure_logging

DEFAULT_CONFIG = Path(__file__).with_name("mcp-oauth-proxy.toml")
# Served by OAuthApp; everything else (the protected resource metadata too) by the guard.
OAUTH_PATHS = ("/oauth/", "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")


def mcp_app(github_api: str, host: str | None) -> ASGIApp:
    """The MCP server itself; it knows nothing of OAuth but what the guard hands it."""
    server = MCPServer("github-whoami")

    @server.tool()
    async def whoami(ctx: Context) -> dict[str, Any]:
        """Who is calling, and their GitHub login."""
        scope = ctx.request_context.request.scope
        principal = scope[PRINCIPAL_KEY]
        # Refreshed at GitHub first if it has expired.
        token = await scope[UPSTREAM_TOKEN_KEY]()
        async with httpx.AsyncClient(base_url=github_api, timeout=10) as github:
            user = await github.get("/user", headers={"authorization": f"Bearer {token}",
                                                      "accept": "application/vnd.github+json"})
        return {
            "user_id": principal.user_id,
            "client_id": principal.client_id,
            "scopes": list(principal.scopes),
            "github_login": user.json().get("login") if user.status_code == 200 else None,
        }

    # A loopback host turns on the SDK's DNS-rebinding check for that host.
    return server.streamable_http_app(streamable_http_path="/mcp", host=host or "127.0.0.1")


def build(config: config_mod.Config, github_api: str | None = None) -> ASGIApp:
    """The OAuth endpoints and the guarded MCP server, side by side."""
    site = build_site(config)
    resource = urlsplit(config.tenants[0].resource)
    api = github_api or os.environ.get("GITHUB_API_URL", "https://api.github.com")
    timeout = config.server.upstream_timeout
    guarded = BearerGuard(mcp_app(api, resource.hostname), site, upstream_timeout=timeout)
    oauth = OAuthApp(site, upstream_timeout=timeout)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(OAUTH_PATHS):
            return await oauth(scope, receive, send)
        if scope["type"] == "lifespan":
            # The MCP app owns the lifespan; the OAuth app's pool closes with it.
            async def receive_and_close() -> MutableMapping[str, Any]:
                message = await receive()
                if message["type"] == "lifespan.shutdown":
                    await oauth.aclose()
                return message

            return await guarded(scope, receive_and_close, send)
        return await guarded(scope, receive, send)

    return app


async def serve(app: ASGIApp, listen: str) -> None:
    hyper = HypercornConfig()
    hyper.bind = [listen]
    hyper.accesslog = None  # authorize and callback URLs carry codes and state

    async def until_signalled() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                return

    from hypercorn.asyncio import serve as hypercorn_serve

    await hypercorn_serve(app, hyper, shutdown_trigger=until_signalled)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="the proxy's TOML config")
    args = parser.parse_args()
    configure_logging("info", False)
    config = config_mod.load(args.config)
    anyio.run(serve, build(config), config.server.listen)


if __name__ == "__main__":
    main()
