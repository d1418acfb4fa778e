"""A current MCP client that identifies itself with a Client ID Metadata
Document (the mcp SDK's ``client_metadata_url``): no registration; our
server fetches the document from a real HTTPS server on loopback (the
tenant's loopback allowance on, its certificate trusted through
SSL_CERT_FILE), shows its host on the consent page, and the client calls a
tool with the tokens it gets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata

from https_server import DocumentServer
from processes import free_port, stop_process, wait_until
from realidp import ADA
from realidp_browser import Person
from test_mcp_sdk_client import DEADLINE, SERVER_SCRIPT, MemoryStorage, PersonAtBrowser, _whoami

CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
database = "memory://"

[[tenants]]
slug = "local"
issuer = "{base}"
resource = "{base}/mcp"
scopes = ["mcp"]
client_metadata_allow_loopback = true

[tenants.upstream]
kind = "oidc"
issuer = "{idp_issuer}"
client_id = "{client_id}"
client_secret_env = "TEST_IDP_CLIENT_SECRET"
scopes = ["openid", "profile", "email", "offline_access"]
"""


def test_mcp_sdk_client_with_a_client_id_metadata_document(start_idp, doc_server: DocumentServer,
                                                           tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    idp = start_idp([f"{base}/oauth/callback"])
    config = tmp_path / "mcp-oauth-proxy.toml"
    config.write_text(CONFIG.format(port=port, base=base, idp_issuer=idp.issuer, client_id=idp.client_id))
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    doc_url = doc_server.url("/oauth/mcp-client.json")
    doc_server.routes["/oauth/mcp-client.json"] = (200, {"content-type": "application/json"}, json.dumps({
        "client_id": doc_url, "client_name": "CIMD test client", "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
        "token_endpoint_auth_method": "none", "application_type": "native"}).encode())
    log = tmp_path / "server.log"
    env = {**os.environ, "TEST_IDP_CLIENT_SECRET": idp.client_secret, "SSL_CERT_FILE": doc_server.cert}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(SERVER_SCRIPT), str(config), idp.userinfo_endpoint],
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=SERVER_SCRIPT.parent, env=env)
    try:
        wait_until(lambda: httpx.get(f"{base}/.well-known/oauth-protected-resource/mcp", timeout=2,
                                     trust_env=False).status_code == 200, DEADLINE, "the MCP server", proc, log)
        anyio.run(_scenario, base, doc_url, redirect_uri, doc_server)
    finally:
        stop_process(proc)
        idp.stop()


async def _scenario(base: str, doc_url: str, redirect_uri: str, documents: DocumentServer) -> None:
    storage = MemoryStorage()
    sent: list[str] = []

    async def record(response: httpx2.Response) -> None:
        sent.append(str(response.request.url))

    async with httpx.AsyncClient(trust_env=False, timeout=20) as browser:
        person = PersonAtBrowser(browser, redirect_uri, Person(ADA["username"], ADA["password"]))
        provider = OAuthClientProvider(
            server_url=f"{base}/mcp",
            client_metadata=OAuthClientMetadata(
                client_name="CIMD test client", redirect_uris=[redirect_uri],
                grant_types=["authorization_code", "refresh_token"], response_types=["code"],
                token_endpoint_auth_method="none", scope="mcp"),
            storage=storage, redirect_handler=person.redirect_handler, callback_handler=person.callback_handler,
            client_metadata_url=doc_url,
        )
        async with httpx2.AsyncClient(auth=provider, timeout=20, event_hooks={"response": [record]}) as http:
            with anyio.fail_after(DEADLINE):
                async with Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
                    me = await _whoami(client)
    assert me["user_id"] == ADA["sub"] and me["client_id"] == doc_url
    # No registration: the document's URL was the client id, and we fetched it.
    assert f"{base}/oauth/register" not in sent
    assert documents.hits.get("/oauth/mcp-client.json", 0) >= 1
    # The consent page named the host that serves the document.
    assert f"localhost:{documents.port}" in person.walks[0].pages[0]
