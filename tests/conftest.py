"""Make ``tests/support.py`` importable from every test folder, keep
property tests reproducible in CI, serve client metadata documents over
real HTTPS on loopback (``doc_server``), an OpenID provider over HTTPS
under a CA of the test's own (``ca``, ``provider``: egress_world.py), and
let a test move the server's clock (``server_clock``)."""

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

from egress_world import TlsProvider, make_ca  # noqa: E402 - needs the path above
from https_server import DocumentServer, self_signed  # noqa: E402 - needs the path above
from support import ServerClock  # importable once the path is set

from mcp_oauth_proxy import runtime
from mcp_oauth_proxy.adapters import site as site_module

# CI runs the same examples every time (a fixed seed per test), so a
# submission lands or fails on its code, not on the draw; locally the draws
# vary and keep looking for new failures.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")


@pytest.fixture
def ca(tmp_path: Path) -> tuple[str, str, str]:
    return make_ca(tmp_path)


@pytest.fixture
def provider(ca: tuple[str, str, str]) -> Iterator[TlsProvider]:
    server = TlsProvider(ca[1], ca[2])
    yield server
    server.close()


@pytest.fixture
def doc_server(tmp_path: Path) -> Iterator[DocumentServer]:
    """A real HTTPS server on loopback with a certificate the tests trust."""
    cert, key = self_signed(tmp_path)
    server = DocumentServer(cert, key)
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def server_clock(monkeypatch: pytest.MonkeyPatch) -> ServerClock:
    """The clock of the apps a test runs in-process, which the test moves on."""
    clock = ServerClock()
    monkeypatch.setattr(runtime, "now_seconds", clock)
    monkeypatch.setattr(site_module, "now_seconds", clock)
    return clock
