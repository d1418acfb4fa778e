"""The examples run as documented, on the example config (its port, database
and key file moved to a temporary place), against a scripted GitHub API on
127.0.0.1: the Starlette MCP server as its own process, called by the mcp
SDK's client; the Flask app through httpx's WSGI transport. Tokens are
issued by the real core (the test Harness) into the example's own store."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import anyio
import attrs
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from processes import free_port
from support import Harness, upstream

from mcp_oauth_proxy import config as config_mod
from mcp_oauth_proxy.app import tenant as tenant_of
from mcp_oauth_proxy.storage.keys import load_or_create_keyring
from mcp_oauth_proxy.storage.open import open_store

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEADLINE = 20.0


def example_config(home: Path, port: int, database: str | None = None) -> Path:
    """examples/mcp-oauth-proxy.toml, listening on ``port``, its files in ``home``."""
    text = (EXAMPLES / "mcp-oauth-proxy.toml").read_text()
    database = database or f"sqlite:///{home / 'proxy.db'}"
    replacements = {
        "127.0.0.1:8000": f"127.0.0.1:{port}",
        'database = "sqlite:///mcp-oauth-proxy.db"': f'database = "{database}"',
        'key_file = "mcp-oauth-proxy.keys"': f'key_file = "{home / "proxy.keys"}"',
    }
    for old, new in replacements.items():
        assert old in text, f"the example config no longer has {old!r}"
        text = text.replace(old, new)
    path = home / "mcp-oauth-proxy.toml"
    path.write_text(text)
    return path


def harness_for(config: config_mod.Config, store: Any) -> Harness:
    """Issues tokens with the real core into the example's store; the
    upstream is the Harness's scripted one (its first access token is
    ``upstream-at-1``)."""
    return Harness(tenant=attrs.evolve(tenant_of(config.tenants[0]), upstream=upstream()), store=store,
                   now=int(time.time()), seed=secrets.randbelow(2**40) * 1000)


@attrs.define
class GitHubAPI:
    """``GET /user`` as GitHub answers it, for the upstream token the Harness issued."""

    url: str
    seen: list[str]
    server: ThreadingHTTPServer


@pytest.fixture
def github() -> Iterator[GitHubAPI]:
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            auth = self.headers.get("authorization", "")
            seen.append(auth)
            ok = self.path == "/user" and auth == "Bearer upstream-at-1"
            body = json.dumps({"login": "ada", "id": 4242} if ok else {"message": "Bad credentials"}).encode()
            self.send_response(200 if ok else 401)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield GitHubAPI(f"http://127.0.0.1:{server.server_address[1]}", seen, server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- the Starlette MCP server, as its own process ---------------------------------------


@attrs.define
class Running:
    base: str
    config: config_mod.Config
    store: Any
    log: Path


@pytest.fixture
def starlette_server(tmp_path: Path, github: GitHubAPI) -> Iterator[Running]:
    port = free_port()
    path = example_config(tmp_path, port)
    config = config_mod.load(path)
    # The key file and schema first, so this test and the server share them.
    keyring, _ = load_or_create_keyring(str(tmp_path / "proxy.keys"))
    store = open_store(config.server.database, keyring)
    log = tmp_path / "server.log"
    env = {**os.environ, "GITHUB_API_URL": github.url, "GITHUB_CLIENT_ID": "example-client-id",
           "GITHUB_CLIENT_SECRET": "example-client-secret"}
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(EXAMPLES / "starlette_mcp_server.py"), "--config", str(path)],
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=tmp_path, env=env)
    try:
        end = time.monotonic() + DEADLINE
        while True:
            assert proc.poll() is None, f"the example exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{base}/.well-known/oauth-protected-resource/mcp", timeout=2,
                             trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < end, f"the example did not start:\n{log.read_text()[-3000:]}"
            time.sleep(0.05)
        yield Running(base, config, store, log)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


async def _whoami(url: str, token: str) -> dict[str, Any]:
    async with httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=20) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            result = await client.call_tool("whoami", {})
    assert not result.is_error, result
    return json.loads(result.content[0].text)


def test_starlette_example_refuses_without_a_token_and_runs_the_tool_with_one(
        starlette_server: Running, github: GitHubAPI) -> None:
    base = starlette_server.base
    refused = httpx.post(f"{base}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, trust_env=False,
                         headers={"accept": "application/json, text/event-stream"})
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith(
        f'Bearer resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"')
    # The OAuth endpoints are served beside the MCP server.
    metadata = httpx.get(f"{base}/.well-known/oauth-authorization-server", trust_env=False)
    assert metadata.status_code == 200 and metadata.json()["issuer"] == base

    harness = harness_for(starlette_server.config, starlette_server.store)
    client, tokens = harness.tokens()
    answer = anyio.run(_whoami, f"{base}/mcp", tokens["access_token"])
    assert answer == {"user_id": "user-42", "client_id": client["client_id"], "scopes": ["mcp"],
                      "github_login": "ada"}
    # GitHub got the person's upstream token, never ours.
    assert github.seen == ["Bearer upstream-at-1"]

    other = httpx.post(f"{base}/mcp", json={}, trust_env=False, headers={
        "authorization": "Bearer mcp_at_" + "n" * 43, "accept": "application/json, text/event-stream"})
    assert other.status_code == 401 and 'error="invalid_token"' in other.headers["www-authenticate"]
    assert tokens["access_token"] not in starlette_server.log.read_text()


# -- the Flask app, in process ---------------------------------------------------------------


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("database", ["sqlite", "memory://"])
def test_flask_example_refuses_without_a_token_and_answers_with_one(
        tmp_path: Path, github: GitHubAPI, database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_CLIENT_ID", "example-client-id")
    monkeypatch.setenv("GITHUB_CLIENT_SECRET", "example-client-secret")
    flask_app = load_example("flask_app")
    config = config_mod.load(example_config(tmp_path, 8000, None if database == "sqlite" else database))
    app = flask_app.create_app(config, github_api=github.url)
    site = app.extensions["mcp_oauth_proxy"]
    base = "http://127.0.0.1:8000"
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url=base) as http:
        refused = http.get("/mcp/whoami")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith(
            f'Bearer resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"')
        assert http.get("/.well-known/oauth-protected-resource/mcp").json()["resource"] == f"{base}/mcp"
        assert http.get("/.well-known/oauth-authorization-server").json()["issuer"] == base

        harness = harness_for(config, site.store)
        client, tokens = harness.tokens()
        bearer = {"authorization": f"Bearer {tokens['access_token']}"}
        answer = http.get("/mcp/whoami", headers=bearer)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"user_id": "user-42", "client_id": client["client_id"], "scopes": ["mcp"],
                                 "github_login": "ada"}
        assert github.seen == ["Bearer upstream-at-1"]

        # Revoked at the example's own OAuth endpoint: refused from then on.
        revoked = http.post("/oauth/revoke", data={"token": tokens["refresh_token"], "client_id": client["client_id"]})
        assert revoked.status_code == 200
        again = http.get("/mcp/whoami", headers=bearer)
        assert again.status_code == 401 and 'error="invalid_token"' in again.headers["www-authenticate"]
    assert len(github.seen) == 1
