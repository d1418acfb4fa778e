"""The README's first command: ``serve`` on examples/dev.toml. The real
``mcp`` SDK client logs in through the development identity provider (a
name, no account anywhere), lists the tools of the MCP server behind the
proxy and calls one, which sees the person the name stands for; the same
name is the same person again. The server refuses to start with
``kind = "dev"`` anywhere but on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata
from processes import free_port, stop_process, tail, wait_until
from realidp_browser import Person
from test_mcp_sdk_client import MemoryStorage, PersonAtBrowser

from mcp_oauth_proxy.core.flows.dev_login import user_id

EXAMPLE = Path(__file__).resolve().parent.parent.parent / "examples" / "dev.toml"
BACKEND = Path(__file__).resolve().parent.parent / "adapters" / "forward_backend.py"


def _config(tmp_path: Path, port: int, backend: int) -> Path:
    text = EXAMPLE.read_text().replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace(
        "127.0.0.1:9000", f"127.0.0.1:{backend}")
    path = tmp_path / "dev.toml"
    path.write_text(text)
    return path


async def _log_in_and_call(base: str, name: str) -> dict[str, str]:
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    async with httpx.AsyncClient(trust_env=False, timeout=20) as browser:
        person = PersonAtBrowser(browser, redirect_uri, Person(name, ""))
        provider = OAuthClientProvider(
            server_url=f"{base}/mcp",
            client_metadata=OAuthClientMetadata(client_name="dev test", redirect_uris=[redirect_uri],
                                                grant_types=["authorization_code", "refresh_token"],
                                                response_types=["code"], token_endpoint_auth_method="none"),
            storage=MemoryStorage(), redirect_handler=person.redirect_handler,
            callback_handler=person.callback_handler)
        async with httpx2.AsyncClient(auth=provider, timeout=20) as http:
            with anyio.fail_after(30):
                async with Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
                    tools = await client.list_tools()
                    assert "headers" in [t.name for t in tools.tools]
                    result = await client.call_tool("headers", {})
                    assert not result.is_error, result
        pages = "".join(person.walks[0].pages)
        assert "Development sign-in" in pages  # every page of it says so
        return json.loads(result.content[0].text)


def test_the_first_command_gives_a_login_with_no_account_anywhere(tmp_path: Path) -> None:
    port, backend_port = free_port(), free_port()
    config = _config(tmp_path, port, backend_port)
    base = f"http://127.0.0.1:{port}"
    logs = tmp_path / "serve.log", tmp_path / "backend.log"
    with logs[1].open("wb") as out:
        backend = subprocess.Popen([sys.executable, str(BACKEND), str(backend_port)], stdout=out, stderr=out,
                                   stdin=subprocess.DEVNULL)
    with logs[0].open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mcp_oauth_proxy.cli", "serve", "--config", str(config)],
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=tmp_path)
    try:
        wait_until(lambda: httpx.get(f"{base}/.well-known/oauth-authorization-server", trust_env=False)
                   .status_code == 200, 30, "serve", proc, logs[0])
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{backend_port}/control/seen", trust_env=False)
                   .status_code == 200, 30, "backend", backend, logs[1])
        first = anyio.run(_log_in_and_call, base, "Ada Lovelace")
        assert first["x-mcp-user"] == user_id("Ada Lovelace")
        again = anyio.run(_log_in_and_call, base, "  ada   LOVELACE ")
        assert again["x-mcp-user"] == first["x-mcp-user"]  # the same name, the same person
        other = anyio.run(_log_in_and_call, base, "Grace Hopper")
        assert other["x-mcp-user"] != first["x-mcp-user"]
    finally:
        stop_process(proc)
        stop_process(backend)
    assert proc.returncode == 0, tail(logs[0])


@pytest.mark.parametrize(("old", "new"), [('listen = "127.0.0.1:8000"', 'listen = "0.0.0.0:8000"'),
                                          ('issuer = "http://127.0.0.1:8000"', 'issuer = "https://dev.example.com"')])
def test_it_refuses_to_start_off_loopback(tmp_path: Path, old: str, new: str) -> None:
    config = tmp_path / "dev.toml"
    config.write_text(EXAMPLE.read_text().replace(old, new))
    done = subprocess.run([sys.executable, "-m", "mcp_oauth_proxy.cli", "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 1 and 'kind = "dev"' in done.stderr, done.stderr


def test_its_endpoints_are_not_served_for_other_tenants() -> None:
    from support import Harness

    h = Harness()
    assert h.request("GET", "https://acme.example.com/oauth/dev/authorize").status == 404
