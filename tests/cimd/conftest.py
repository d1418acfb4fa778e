"""A real HTTPS server on loopback with a certificate the tests trust."""

from __future__ import annotations

from typing import Iterator

import pytest

from https_server import DocumentServer, self_signed


@pytest.fixture
def doc_server(tmp_path) -> Iterator[DocumentServer]:
    cert, key = self_signed(tmp_path)
    server = DocumentServer(cert, key)
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
