"""A database that is down, busy or drops a connection gives
StorageUnavailable (the core answers 503), and the store recovers by itself."""

from __future__ import annotations

import sqlite3
import threading

import pytest
import sqlalchemy

from databases import isolated_database
from support import Harness
from mcp_oauth_proxy.core.errors import StorageUnavailable
from mcp_oauth_proxy.storage.crypto import KeyRing
from mcp_oauth_proxy.storage.open import open_store
from mcp_oauth_proxy.storage.sql import SqlStore, make_engine
from storage_records import client

NOBODY_LISTENS = ["postgresql://postgres@127.0.0.1:1/test", "mysql://root@127.0.0.1:1/test"]


@pytest.mark.parametrize("url", NOBODY_LISTENS)
def test_an_unreachable_database_is_storage_unavailable(url):
    with pytest.raises(StorageUnavailable, match="cannot reach the database"):
        open_store(url, KeyRing.generate())
    store = SqlStore(url, KeyRing.generate())
    with pytest.raises(StorageUnavailable):
        store.get_access_token("acme", "h")
    with pytest.raises(StorageUnavailable):
        store.take_code("acme", "h", 0)


def test_the_token_endpoint_answers_503_when_the_database_is_down():
    h = Harness(store=SqlStore(NOBODY_LISTENS[0], KeyRing.generate()))
    response = h.token({"grant_type": "authorization_code", "code": "c", "client_id": "x", "redirect_uri": "x",
                        "code_verifier": "v" * 43})
    assert response.status == 503
    assert response.json()["error"] == "temporarily_unavailable"


def test_a_sqlite_database_locked_past_the_busy_timeout_is_unavailable_then_usable(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    open_store(url, KeyRing.generate()).engine.dispose()
    store = SqlStore(make_engine(url, timeout=0.05), KeyRing.generate())
    other = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    with pytest.raises(StorageUnavailable):
        store.save_client(client())
    assert store.get_client("acme", "client-1") is None  # readers are not blocked (WAL)
    other.execute("COMMIT")
    store.save_client(client())
    assert store.get_client("acme", "client-1") == client()


def _session_id(conn: sqlalchemy.Connection) -> int:
    query = "SELECT pg_backend_pid()" if conn.dialect.name == "postgresql" else "SELECT CONNECTION_ID()"
    return int(conn.execute(sqlalchemy.text(query)).scalar_one())


def test_a_dropped_connection_fails_one_call_and_the_next_reconnects(server_db_url, ring):
    store = open_store(server_db_url, ring)
    store.save_client(client())
    with store.engine.connect() as conn:  # the one pooled connection the store uses
        victim = _session_id(conn)
    admin = make_engine(server_db_url)
    kill = "SELECT pg_terminate_backend(:id)" if admin.dialect.name == "postgresql" else "KILL :id"
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(kill), {"id": victim})
    admin.dispose()
    with pytest.raises(StorageUnavailable):
        store.get_client("acme", "client-1")
    assert store.get_client("acme", "client-1") == client()
    store.engine.dispose()


def test_an_in_memory_sqlite_store_takes_turns_between_threads():
    store = open_store("sqlite://", KeyRing.generate())
    barrier = threading.Barrier(8)
    counts: list[int] = []

    def hit() -> None:
        barrier.wait()
        counts.extend(store.hit_counter("k", 0, 60) for _ in range(20))

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(counts) == list(range(1, 161))


@pytest.mark.postgresql
def test_a_postgresql_statement_past_the_timeout_is_cancelled(tmp_path):
    for url in isolated_database("postgresql", tmp_path):
        store = open_store(url, KeyRing.generate(), timeout=1)
        with store.engine.connect() as conn:
            # The URL's own options (the test's schema) are kept beside the timeout.
            assert conn.execute(sqlalchemy.text("SHOW search_path")).scalar_one() == url.rsplit("%3D", 1)[1]
            with pytest.raises(sqlalchemy.exc.OperationalError, match="statement timeout"):
                conn.execute(sqlalchemy.text("SELECT pg_sleep(3)"))
        store.engine.dispose()
        migrating = make_engine(url, timeout=1, bound_statements=False)  # a migration may take long
        with migrating.connect() as conn:
            assert conn.execute(sqlalchemy.text("SHOW statement_timeout")).scalar_one() == "0"
        migrating.dispose()
