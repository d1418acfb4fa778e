"""A world for the page tests: a real ``serve`` process on localhost, a
GitHub-shaped identity provider on 127.0.0.1 that signs the person in at
once (so our callback is reached across sites, as in real life), and the
site an MCP client waits at for its code."""

from __future__ import annotations

import contextlib
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import attrs
import httpx
from local_idp import CLIENT_ID, CLIENT_SECRET, LocalIdP
from processes import free_port, stop_process, wait_until

from mcp_oauth_proxy.core.pkce import s256

VERIFIER = "b" * 50
CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
database = "memory://"

[[tenants]]
slug = "acme"
issuer = "{base}"
resource = "{base}/mcp"
scopes = ["mcp"]

[tenants.upstream]
kind = "github"
client_id = "{client_id}"
client_secret_env = "TEST_IDP_CLIENT_SECRET"
authorization_endpoint = "{idp}/authorize"
token_endpoint = "{idp}/token"
userinfo_endpoint = "{idp}/user"
"""


@attrs.define
class World:
    base: str
    idp: LocalIdP
    # Where the MCP client waits for its code, and what reached it.
    redirect_uri: str
    arrived: list[str]
    client_id: str = ""

    def authorize_url(self) -> str:
        return f"{self.base}/oauth/authorize?" + urlencode({
            "response_type": "code", "client_id": self.client_id, "redirect_uri": self.redirect_uri, "state": "st",
            "code_challenge": s256(VERIFIER), "code_challenge_method": "S256", "resource": f"{self.base}/mcp"})

    def register(self, client_name: str, auth_method: str = "none") -> str:
        """A client (public unless ``auth_method`` says) registered through the
        API, redirecting to this world's client site."""
        r = httpx.post(f"{self.base}/oauth/register", json={
            "redirect_uris": [self.redirect_uri], "client_name": client_name,
            "token_endpoint_auth_method": auth_method, "grant_types": ["authorization_code"]})
        assert r.status_code == 201, r.text
        return r.json()["client_id"]

    def code_at_client(self, page: object) -> str:
        """The code the browser brought to the client's redirect URI."""
        page.wait_for_url(f"{self.redirect_uri}?**")  # type: ignore[attr-defined]
        query = parse_qs(urlsplit(page.url).query)  # type: ignore[attr-defined]
        assert query["state"] == ["st"] and query["iss"] == [self.base]
        return query["code"][0]


def _client_redirect_server(arrived: list[str]) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/cb"):
                arrived.append(self.path)
            body = b"<title>client</title>signed in"
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@contextlib.contextmanager
def serving(tmp_path: Path) -> Iterator[World]:
    """A ``serve`` process (memory store) with its identity provider and a client site."""
    idp = LocalIdP("github")
    arrived: list[str] = []
    client_site = _client_redirect_server(arrived)
    port = free_port()
    # localhost for us, 127.0.0.1 for the identity provider: the redirect
    # back to our callback crosses sites, as it does in real life.
    base = f"http://localhost:{port}"
    config = tmp_path / "proxy.toml"
    config.write_text(CONFIG.format(port=port, base=base, client_id=CLIENT_ID, idp=idp.url))
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mcp_oauth_proxy.cli", "serve", "--config", str(config)],
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=tmp_path,
                                env={**os.environ, "TEST_IDP_CLIENT_SECRET": CLIENT_SECRET})
    try:
        wait_until(lambda: httpx.get(f"{base}/.well-known/oauth-authorization-server").status_code == 200,
                   30, "serve", proc, log)
        w = World(base, idp, f"http://127.0.0.1:{client_site.server_address[1]}/cb", arrived)
        w.client_id = w.register("Browser Test Client")
        yield w
    finally:
        stop_process(proc)
        client_site.shutdown()
        client_site.server_close()
        idp.stop()
