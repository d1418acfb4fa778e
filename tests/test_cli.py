"""The ``mcp-oauth-proxy`` command: check-config, and serve as a real
process on loopback (asyncio and trio)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from processes import free_port

from mcp_oauth_proxy.cli import main

CONFIG = """
[server]
listen = "127.0.0.1:{port}"
database = "sqlite:///{db}"
key_file = "{keys}"

[[tenants]]
slug = "acme"
issuer = "http://127.0.0.1:{port}"
resource = "http://127.0.0.1:{port}/mcp"

[tenants.upstream]
kind = "github"
client_id = "cid"
client_secret_env = "TEST_CLI_GITHUB_SECRET"
"""


def write_config(tmp_path: Path, port: int = 8000, text: str = CONFIG) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(text.format(port=port, db=tmp_path / "proxy.db", keys=tmp_path / "proxy.keys"))
    return path


def test_check_config_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(write_config(tmp_path))]) == 0
    out, err = capsys.readouterr()
    assert "ok (1 tenant(s))" in out
    assert "TEST_CLI_GITHUB_SECRET is not set" in err


def test_check_config_reports_each_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = CONFIG.replace('kind = "github"', 'kind = "gitlub"').replace('client_id = "cid"\n', "")
    assert main(["check-config", str(write_config(tmp_path, text=bad))]) == 1
    _, err = capsys.readouterr()
    assert "tenants[0].upstream.kind: must be one of oidc, github, google, auth0, oauth2" in err


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    # The installed console script, as a person runs it.
    script = shutil.which("mcp-oauth-proxy") or str(Path(sys.executable).parent / "mcp-oauth-proxy")
    return subprocess.Popen([script, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_serve_refuses_a_bad_config(tmp_path: Path) -> None:
    port = free_port()
    path = write_config(tmp_path, port, CONFIG.replace('slug = "acme"', "slug = 7"))
    proc = run_cli("serve", "--config", str(path))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert b"tenants[0].slug: must be a string" in err
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_serve_answers_metadata_and_stops_cleanly(tmp_path: Path, loop: str) -> None:
    port = free_port()
    path = write_config(tmp_path, port)
    env = dict(os.environ, TEST_CLI_GITHUB_SECRET="a-secret-value")
    proc = run_cli("serve", "--config", str(path), *(["--trio"] if loop == "trio" else []), env=env)
    try:
        url = f"http://127.0.0.1:{port}/.well-known/oauth-authorization-server"
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                response = httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # polling with a deadline, not waiting for a guess
        assert response.status_code == 200
        assert response.json()["issuer"] == f"http://127.0.0.1:{port}"
        r = httpx.post(f"http://127.0.0.1:{port}/oauth/register",
                       json={"redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "none"})
        assert r.status_code == 201
        assert httpx.get(f"http://127.0.0.1:{port}/mcp").status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    assert b"a-secret-value" not in err
    assert (tmp_path / "proxy.db").exists()
