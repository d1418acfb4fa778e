from __future__ import annotations

from typing import Iterator

import pytest
from local_idp import LocalIdP


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=["oidc", "github"])
def idp(request: pytest.FixtureRequest) -> Iterator[LocalIdP]:
    server = LocalIdP(request.param)
    yield server
    server.stop()


@pytest.fixture
def oidc_idp() -> Iterator[LocalIdP]:
    server = LocalIdP("oidc")
    yield server
    server.stop()
