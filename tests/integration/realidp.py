"""Real processes on 127.0.0.1 for the integration tests: the identity
provider in ``tests/idp`` (the ``oidc-provider`` npm package), and the people
who can sign in there. (The fixtures are in conftest.py; tests import from
here; processes.py has the helpers that start, wait for and stop servers.)

Without ``node``/``npm`` the tests that need the identity provider are
skipped, unless ``MCP_OAUTH_PROXY_REQUIRE_DATABASES=1`` (CI), where that is
a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import attrs
import pytest
from processes import stop_process, tail

IDP_DIR = Path(__file__).resolve().parent.parent / "idp"
STARTUP_DEADLINE = 30.0
INSTALL_DEADLINE = 300.0

# The proxy's client at the identity provider.
IDP_CLIENT_ID = "mcp-oauth-proxy"
IDP_CLIENT_SECRET = "proxy-secret-at-the-idp-0123456789"

# The people who can sign in at the identity provider (see tests/idp/server.mjs).
ADA = {"username": "ada", "password": "correct horse battery staple", "sub": "ada-7f3c", "id": 4242,
       "name": "Ada Lovelace", "email": "ada@example.org"}
GRACE = {"username": "grace", "password": "cobol forever", "sub": "grace-19a0", "id": 1906,
         "name": "Grace Hopper", "email": "grace@example.org"}


def _required() -> bool:
    return os.environ.get("MCP_OAUTH_PROXY_REQUIRE_DATABASES") == "1"


def _unavailable(reason: str) -> None:
    if _required():
        pytest.fail(f"{reason} (MCP_OAUTH_PROXY_REQUIRE_DATABASES=1)", pytrace=False)
    pytest.skip(reason)


# -- the identity provider -----------------------------------------------------


@attrs.define
class IdP:
    """A running ``tests/idp/server.mjs``."""

    issuer: str
    mode: str
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]
    process: subprocess.Popen = attrs.field(repr=False)
    log: Path = attrs.field(repr=False)

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.issuer}/auth"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    @property
    def userinfo_endpoint(self) -> str:
        # GitHub's profile endpoint is /user; the OIDC one is in discovery (/me).
        return f"{self.issuer}/user" if self.mode == "github" else f"{self.issuer}/me"

    def stop(self) -> None:
        stop_process(self.process)

    def logs(self) -> str:
        return tail(self.log, 20000)


def ensure_installed() -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("node and npm are needed for the identity provider in tests/idp (install Node.js 20+)")
    if (IDP_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        return
    try:
        done = subprocess.run(
            [npm, "ci", "--prefix", str(IDP_DIR), "--no-audit", "--no-fund"],
            capture_output=True, text=True, timeout=INSTALL_DEADLINE,
        )
    except subprocess.TimeoutExpired:
        _unavailable(f"npm ci --prefix {IDP_DIR} took longer than {INSTALL_DEADLINE:.0f}s")
    if done.returncode != 0:
        _unavailable(f"npm ci --prefix {IDP_DIR} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
