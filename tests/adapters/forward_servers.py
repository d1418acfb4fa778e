"""Processes for the forwarding tests: the backend MCP server
(``forward_backend.py``) and ``mcp-oauth-proxy serve`` in front of it, each on
a free loopback port, waited for with deadlines and stopped with SIGTERM;
what the tests ask the backend about what reached it; the module-scoped
fixtures ``backend``, ``upstream`` and ``proxy`` (asyncio and trio) that
test modules import; and the forwarder in-process, handed a request as the
guard hands it one (``as_guarded``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import attrs
import httpx
import pytest
from local_idp import CLIENT_ID, CLIENT_SECRET, LocalIdP
from oauth_walk import drive, tokens
from processes import free_port, stop_process, tail, wait_until

from mcp_oauth_proxy.adapters.forward import Forwarder
from mcp_oauth_proxy.adapters.site import PRINCIPAL_KEY, UPSTREAM_TOKEN_KEY
from mcp_oauth_proxy.core.flows.guard import Principal

BACKEND_SCRIPT = Path(__file__).with_name("forward_backend.py")
DEADLINE = 30.0
GRACE = 10.0  # seconds from SIGTERM to SIGKILL
TOKEN_HEADER = "X-Upstream-Token"

CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
database = "memory://"

[[tenants]]
slug = "acme"
issuer = "{base}"
resource = "{base}/mcp"
backend = "{backend}/mcp"
forward_upstream_token_header = "{header}"
scopes = ["mcp"]

[tenants.upstream]
kind = "oidc"
issuer = "{idp}"
client_id = "{client_id}"
client_secret_env = "FORWARD_TEST_IDP_SECRET"
"""


@attrs.frozen
class Proxy:
    """A running ``serve`` process, and a login through it."""

    base: str
    backend: str
    client_id: str
    access_token: str
    upstream_token: str
    loop: str
    log: Path

    @property
    def mcp(self) -> str:
        return f"{self.base}/mcp"

    def bearer(self, **more: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.access_token}", **more}


def start(cmd: list[str], log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    # PYTHONPATH=src (the checkout's code first) names a folder relative to
    # here; the process runs in its log's folder, so it gets it absolute.
    path = os.pathsep.join(str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=log.parent,
                                env={**os.environ, "PYTHONPATH": path, **(env or {})})


def start_backend(port: int, log: Path) -> subprocess.Popen:
    proc = start([sys.executable, str(BACKEND_SCRIPT), str(port)], log)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/control/seen", trust_env=False, timeout=2)
                   .status_code == 200, DEADLINE, "the backend MCP server", proc, log)
    except BaseException:
        stop_process(proc, GRACE)
        raise
    return proc


def start_proxy(config: Path, base: str, log: Path, env: Mapping[str, str], trio: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mcp_oauth_proxy.cli", "serve", "--config", str(config)]
    proc = start(cmd + (["--trio"] if trio else []), log, env)
    try:
        wait_until(lambda: httpx.get(f"{base}/.well-known/oauth-authorization-server", trust_env=False, timeout=2)
                   .status_code == 200, DEADLINE, "mcp-oauth-proxy serve", proc, log)
    except BaseException:
        stop_process(proc, GRACE)
        raise
    return proc


@contextmanager
def running_backend(where: Path) -> Iterator[str]:
    """The backend MCP server's base URL while it runs."""
    port = free_port()
    log = where / "backend.log"
    proc = start_backend(port, log)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc, GRACE)
    # uvicorn ends by re-raising the SIGTERM it handled.
    assert proc.returncode in (0, -signal.SIGTERM), tail(log)


@contextmanager
def running_proxy(where: Path, backend: str, upstream: LocalIdP, loop: str) -> Iterator[Proxy]:
    """``serve`` (on ``loop``) in front of ``backend``, and a login through it;
    on the way out, checks it stopped cleanly and logged no token."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = where / "forward.toml"
    config.write_text(CONFIG.format(port=port, base=base, backend=backend, header=TOKEN_HEADER, idp=upstream.url,
                                    client_id=CLIENT_ID))
    log = where / "serve.log"
    proc = start_proxy(config, base, log, {"FORWARD_TEST_IDP_SECRET": CLIENT_SECRET}, loop == "trio")
    try:
        with httpx.Client(trust_env=False, follow_redirects=False, timeout=DEADLINE) as http:
            client_id, issued = drive(tokens(base, f"{base}/mcp"), http)
        # The upstream's access token from this login (LocalIdP numbers them).
        upstream_token = f"idp-at-{upstream.issued}"
        yield Proxy(base, backend, client_id, issued["access_token"], upstream_token, loop, log)
    finally:
        stop_process(proc, GRACE)
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, tail(log)
    # Tokens never reach the log.
    assert issued["access_token"] not in text and upstream_token not in text


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_backend(tmp_path_factory.mktemp("backend")) as url:
        yield url


@pytest.fixture(scope="module")
def upstream() -> Iterator[LocalIdP]:
    server = LocalIdP("oidc")
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def proxy(request: pytest.FixtureRequest, backend: str, upstream: LocalIdP,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    with running_proxy(tmp_path_factory.mktemp(f"proxy-{request.param}"), backend, upstream, request.param) as p:
        yield p


def seen(backend: str) -> dict[str, Any]:
    return httpx.get(f"{backend}/control/seen", trust_env=False, timeout=5).json()


def requests_with(backend: str, query: str) -> list[dict[str, Any]]:
    return [r for r in seen(backend)["seen"] if r["query"] == query]


def open_gate(backend: str, key: str) -> None:
    assert httpx.post(f"{backend}/control/open", params={"key": key}, trust_env=False, timeout=5).status_code == 200


PRINCIPAL = Principal(tenant="acme", user_id="user-42", client_id="client-1", scopes=("mcp", "extra"),
                      expires_at=2**40, grant_id="g1", resource="http://acme.test/mcp")


def as_guarded(forwarder: Forwarder, getter: Any) -> Any:
    """The forwarder as an ASGI app, each request admitted for ``PRINCIPAL``,
    ``getter`` its upstream token."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await forwarder({**scope, PRINCIPAL_KEY: PRINCIPAL, UPSTREAM_TOKEN_KEY: getter}, receive, send)

    return app
