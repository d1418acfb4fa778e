"""Make ``tests/support.py`` importable from every test folder, keep
property tests reproducible in CI, and serve client metadata documents over
real HTTPS on loopback (``doc_server``)."""

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

from https_server import DocumentServer, self_signed  # noqa: E402 - needs the path above

# CI runs the same examples every time (a fixed seed per test), so a
# submission lands or fails on its code, not on the draw; locally the draws
# vary and keep looking for new failures.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")


@pytest.fixture
def doc_server(tmp_path: Path) -> Iterator[DocumentServer]:
    """A real HTTPS server on loopback with a certificate the tests trust."""
    cert, key = self_signed(tmp_path)
    server = DocumentServer(cert, key)
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
