"""The standing attack suite: one module per area, each test named after the
attack it stops. The adapters' test servers (a local identity provider, the
real apps) are shared with tests/adapters."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "adapters"))

from local_idp import LocalIdP  # noqa: E402


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def oidc_idp() -> Iterator[LocalIdP]:
    server = LocalIdP("oidc")
    yield server
    server.stop()
