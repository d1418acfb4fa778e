"""Rate limits hold across replicas: two `serve` processes sharing one
database count one remote address together, trip, and recover when the
window passes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from test_replicas import Replica, pg_database  # noqa: F401 - the fixture

CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
database = "{database}"
key_file = "{key_file}"

[[tenants]]
slug = "replica"
issuer = "http://replica.test"
resource = "http://replica.test/mcp"

[tenants.rate_limits.register]
per_address = 3
window = 4

[tenants.upstream]
kind = "github"
client_id = "unused"
client_secret = "unused"
"""


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_registrations_from_one_address_are_capped_across_two_processes(request, tmp_path: Path, database: str):
    from processes import free_port

    db = f"sqlite:///{tmp_path / 'shared.db'}" if database == "sqlite" else request.getfixturevalue("pg_database")
    replicas = []
    for name in ("a", "b"):
        port = free_port()
        config = tmp_path / f"{name}.toml"
        config.write_text(CONFIG.format(port=port, database=db, key_file=tmp_path / "shared.keys"))
        replicas.append(Replica(config, port, tmp_path / f"{name}.log", dict(os.environ)))
    a, b = (r.start() for r in replicas)
    try:
        def register(replica: Replica) -> httpx.Response:
            return httpx.post(f"http://127.0.0.1:{replica.port}/oauth/register", headers={"host": "replica.test"},
                              json={"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"},
                              trust_env=False, timeout=10)

        # Start at the beginning of a window so that all four land in it.
        while time.time() % 4 > 0.5:
            time.sleep(0.02)
        answers = [register(a).status_code, register(b).status_code, register(a).status_code]
        over = register(b)
        assert answers == [201, 201, 201], answers
        assert over.status_code == 429, over.text
        assert over.json()["error"] == "temporarily_unavailable" and 1 <= int(over.headers["retry-after"]) <= 4
        time.sleep(int(over.headers["retry-after"]))
        assert register(b).status_code == 201  # the next window
    finally:
        a.stop()
        b.stop()
