"""PostgreSQL announces changes (storage/notices.py): a replica following
the directory and revocations with looks a minute apart still sees another
process's new server and revoked grant at once, because the notice wakes
it. Elsewhere nothing is announced (the looks alone carry changes)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Iterator

import anyio
import pytest
from databases import isolated_database
from storage_records import config, grant, org, server, with_tokens

from mcp_oauth_proxy.directory import Directory
from mcp_oauth_proxy.housekeeping import Wake, follow_directory, follow_revocations, relay_notices
from mcp_oauth_proxy.storage.crypto import KeyRing
from mcp_oauth_proxy.storage.notices import DIRECTORY, REVOCATION
from mcp_oauth_proxy.storage.open import open_store
from mcp_oauth_proxy.storage.token_cache import TokenCache
from mcp_oauth_proxy.tenants_db import DatabaseTenants

A_MINUTE = 60.0


def test_only_postgresql_announces(store: Any) -> None:
    is_postgresql = getattr(getattr(store, "engine", None), "dialect", None) is not None and \
        store.engine.dialect.name == "postgresql"
    assert (store.traits.notices is not None) == is_postgresql


@pytest.fixture
def postgresql_url(tmp_path: Path) -> Iterator[str]:
    yield from isolated_database("postgresql", tmp_path)


@pytest.mark.postgresql
def test_a_notice_wakes_the_followers_long_before_their_next_look(postgresql_url: str) -> None:
    server_db_url = postgresql_url
    ring = KeyRing.generate("k1")
    here, elsewhere = open_store(server_db_url, ring), open_store(server_db_url, ring)
    elsewhere.create_organization(org())
    elsewhere.create_oauth_config(config())
    g = grant(tenant="acme")
    access, _ = with_tokens(elsewhere, g)
    cache = TokenCache(here, 300)
    assert cache.get_access_token("acme", access.token_hash) is not None  # remembered for 300 s
    directory = Directory(DatabaseTenants(cache))
    assert directory.current.entries == ()

    async def main() -> None:
        wakes = {DIRECTORY: Wake(), REVOCATION: Wake()}
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(relay_notices, cache.traits.notices, wakes)
            tasks.start_soon(partial(follow_directory, directory, A_MINUTE, wake=wakes[DIRECTORY]))
            tasks.start_soon(partial(follow_revocations, cache, A_MINUTE, wake=wakes[REVOCATION]))
            await anyio.sleep(0.5)  # listening
            await anyio.to_thread.run_sync(elsewhere.create_server, server())
            await anyio.to_thread.run_sync(lambda: elsewhere.revoke_grant(tenant="acme", grant_id=g.grant_id))
            with anyio.fail_after(3):  # not a minute
                while [e.tenant.slug for e in directory.current.entries] != ["acme"] or \
                        cache.remembered("acme", access.token_hash) is not None:
                    await anyio.sleep(0.02)
            tasks.cancel_scope.cancel()

    try:
        anyio.run(main)
    finally:
        for s in (here, elsewhere):
            if s._listener is not None:
                s._listener.close()
            s.engine.dispose()
