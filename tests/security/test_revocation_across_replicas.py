"""A token revoked through one replica is refused by every replica sharing
the database within two seconds, however long their token caches remember
(token_cache_seconds = 300 here): two ``serve`` processes on one database,
PostgreSQL or one SQLite file."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from databases import isolated_database
from processes import free_port
from served import seed_access_token, serve

from mcp_oauth_proxy.core.models import Client
from mcp_oauth_proxy.storage.keys import load_or_create_keyring
from mcp_oauth_proxy.storage.open import open_store

LONG_MEMORY = "token_cache_seconds = 300"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql),
                        pytest.param("mariadb", marks=pytest.mark.mariadb)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from isolated_database(request.param, tmp_path)


def _public_client(database: str, keys: Path) -> None:
    """The client the seeded token was issued to, so that it may revoke it."""
    store = open_store(database, load_or_create_keyring(str(keys))[0])
    store.save_client(Client(tenant="acme", client_id="c", redirect_uris=("http://127.0.0.1/cb",),
                             token_endpoint_auth_method="none", grant_types=("authorization_code", "refresh_token"),
                             response_types=("code",), application_type="native", created_at=int(time.time())))
    store.engine.dispose()


def _status(http: httpx.Client, base: str, host: str, token: str) -> int:
    return http.get(f"{base}/mcp", headers={"host": host, "authorization": f"Bearer {token}"}).status_code


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_a_token_revoked_through_one_replica_is_refused_by_the_other_within_two_seconds(
        database: str, loop: str, tmp_path: Path) -> None:
    port, other = free_port(), free_port()
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    host = f"127.0.0.1:{port}"
    token = seed_access_token(database, first / "keys", "acme", f"http://{host}/mcp")
    shutil.copy(first / "keys", second / "keys")
    _public_client(database, first / "keys")
    with serve(first, loop, port=port, database=database, server=LONG_MEMORY) as a, \
            serve(second, loop, port=port, listen=other, database=database, server=LONG_MEMORY) as b, \
            httpx.Client(timeout=10, trust_env=False) as http:
        # Both accept the token, and now remember it (no backend: the forwarder's 404, past the guard).
        assert _status(http, a.base, host, token) == _status(http, b.base, host, token) == 404
        revoked = http.post(f"{a.base}/oauth/revoke", headers={"host": host},
                            data={"token": token, "client_id": "c"})
        assert revoked.status_code == 200
        assert _status(http, a.base, host, token) == 401  # at once where it was revoked
        started = time.monotonic()
        while _status(http, b.base, host, token) != 401:
            assert time.monotonic() - started < 2.0, "the other replica still accepts the revoked token"
            time.sleep(0.05)
