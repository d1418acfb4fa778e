"""A Flask app protected by mcp-oauth-proxy's WSGI guard (``BearerGuardWSGI``),
with the proxy's OAuth endpoints (``OAuthWSGIApp``) in the same app.

    pip install mcp-oauth-proxy flask
    export GITHUB_CLIENT_ID=... GITHUB_CLIENT_SECRET=...   # a GitHub OAuth app
    python examples/flask_app.py --config examples/mcp-oauth-proxy.toml
    # or any WSGI server:  gunicorn 'flask_app:create_app()'  (from examples/)

Every Flask route is behind the guard: a request needs an access token of
this server (``Authorization: Bearer mcp_at_...``) for the tenant's resource.
``/mcp/whoami`` answers with the person and their GitHub login, read from the
GitHub API with the person's upstream token (``GITHUB_API_URL`` overrides the
API base). The OAuth endpoints (``/oauth/*``, the metadata) pass the guard by.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

import httpx
from flask import Flask, jsonify, request

from mcp_oauth_proxy import config as config_mod
from mcp_oauth_proxy.adapters.site import PRINCIPAL_KEY, UPSTREAM_TOKEN_KEY
from mcp_oauth_proxy.adapters.wsgi import BearerGuardWSGI, OAuthWSGIApp, StartResponse
from mcp_oauth_proxy.app import build_site
from mcp_oauth_proxy.core.errors import OAuthError
from mcp_oauth_proxy.logs import configure_logging

DEFAULT_CONFIG = Path(__file__).with_name("mcp-oauth-proxy.toml")
OAUTH_PATHS = ("/oauth/", "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")


def create_app(config: config_mod.Config | None = None, github_api: str | None = None) -> Flask:
    """The Flask app; ``app.extensions["mcp_oauth_proxy"]`` is its Site."""
    config = config or config_mod.load(os.environ.get("MCP_OAUTH_PROXY_CONFIG", DEFAULT_CONFIG))
    api = github_api or os.environ.get("GITHUB_API_URL", "https://api.github.com")
    site = build_site(config)
    app = Flask(__name__)
    app.extensions["mcp_oauth_proxy"] = site

    @app.get(urlsplit(config.tenants[0].resource).path.rstrip("/") + "/whoami")
    def whoami() -> Any:
        principal = request.environ[PRINCIPAL_KEY]
        try:
            token = request.environ[UPSTREAM_TOKEN_KEY]()  # refreshed at GitHub if expired
        except OAuthError as exc:  # sign in again, or GitHub is down
            return jsonify(error=exc.error, error_description=exc.description), exc.status
        user = httpx.get(f"{api}/user", timeout=10, headers={"authorization": f"Bearer {token}",
                                                               "accept": "application/vnd.github+json"})
        return jsonify(user_id=principal.user_id, client_id=principal.client_id, scopes=list(principal.scopes),
                       github_login=user.json().get("login") if user.status_code == 200 else None)

    oauth = OAuthWSGIApp(site, upstream_timeout=config.server.upstream_timeout)
    guarded = BearerGuardWSGI(app.wsgi_app, site, upstream_timeout=config.server.upstream_timeout)

    def dispatch(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith(OAUTH_PATHS):
            return oauth(environ, start_response)
        return guarded(environ, start_response)

    app.wsgi_app = dispatch  # type: ignore[method-assign]
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="the proxy's TOML config")
    args = parser.parse_args()
    configure_logging("info", False)
    config = config_mod.load(args.config)
    host, _, port = config.server.listen.rpartition(":")
    # Flask's development server; use gunicorn or another WSGI server in production.
    create_app(config).run(host=host, port=int(port))


if __name__ == "__main__":
    main()
