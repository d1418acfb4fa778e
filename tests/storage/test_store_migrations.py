"""Schema versions, kept by Alembic: an empty database is created on first
open; an older one is upgraded only when asked."""

from __future__ import annotations

import multiprocessing

import pytest
import sqlalchemy

from schema_history import add_revision, legacy_database
from storage_records import T0, session
from mcp_oauth_proxy.storage import migrations
from mcp_oauth_proxy.storage.crypto import KeyRing
from mcp_oauth_proxy.storage.migrations import SchemaError, SchemaOutdated, version_of
from mcp_oauth_proxy.storage.open import open_store
from mcp_oauth_proxy.storage.schema import metadata
from mcp_oauth_proxy.storage.sql import make_engine

LATEST = migrations.number(migrations.revisions()[-1])


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


_ADD_EXTRA = 'op.create_table("extra", sa.Column("id", sa.Integer, primary_key=True))'


def test_an_empty_database_is_created_at_the_latest_version(sql_url, ring):
    store = open_store(sql_url, ring)
    with store.engine.connect() as conn:
        assert version_of(conn) == LATEST
    store.engine.dispose()
    assert _tables(sql_url) == set(metadata.tables) | {"alembic_version"}
    open_store(sql_url, ring).engine.dispose()  # opening again changes nothing


def test_an_older_schema_is_refused_naming_the_command_and_upgraded_when_asked(sql_url, ring, monkeypatch, tmp_path):
    open_store(sql_url, ring).engine.dispose()  # a database at today's version
    now = LATEST
    add_revision(tmp_path, monkeypatch, _ADD_EXTRA)
    with pytest.raises(SchemaOutdated, match=f"version {now}, this program needs version {now + 1}: run `mcp-oauth-proxy db upgrade`"):
        open_store(sql_url, ring)
    assert "extra" not in _tables(sql_url)
    open_store(sql_url, ring, upgrade=True).engine.dispose()
    assert "extra" in _tables(sql_url)
    open_store(sql_url, ring).engine.dispose()


def test_a_schema_newer_than_the_program_is_refused(sql_url, ring):
    open_store(sql_url, ring).engine.dispose()
    engine = make_engine(sql_url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(SchemaError, match="version 99, newer than"):
        open_store(sql_url, ring)


def test_tables_without_a_version_are_not_taken_over(sql_url, ring):
    engine = make_engine(sql_url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE grants (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(SchemaError, match=r"holds tables \['grants'\] but no schema version"):
        open_store(sql_url, ring)


def _open(url: str, keys: dict[str, bytes], results: multiprocessing.Queue) -> None:
    try:
        open_store(url, KeyRing(keys, "k1")).engine.dispose()
        results.put("ok")
    except Exception as error:
        results.put(repr(error))


def test_replicas_starting_together_on_an_empty_database_create_it_once(sql_url, ring):
    mp = multiprocessing.get_context("fork")
    results = mp.Queue()
    starters = [mp.Process(target=_open, args=(sql_url, ring.raw_keys(), results)) for _ in range(4)]
    for p in starters:
        p.start()
    assert [results.get(timeout=60) for _ in starters] == ["ok"] * 4
    for p in starters:
        p.join()
    engine = make_engine(sql_url)
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalars().all() == [
            migrations.revisions()[-1]]
    engine.dispose()


# The columns later migrations added to the version-1 tables.
_ADDED_SINCE_1 = [("auth_sessions", "browser_hash"), ("refresh_tokens", "successor_hash")]


def _version_1_database(url: str, ring: KeyRing) -> None:
    """A database as version 1 of the schema left it, holding a client and a
    login in progress."""
    legacy_database(url, 1)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(
            "INSERT INTO clients (tenant, client_id, redirect_uris, token_endpoint_auth_method, grant_types,"
            " response_types, application_type, created_at) VALUES ('acme', 'mcp_client_old', '[\"http://127.0.0.1/cb\"]',"
            " 'none', '[\"authorization_code\"]', '[\"code\"]', 'native', 0)"))
        conn.execute(sqlalchemy.text(
            "INSERT INTO auth_sessions (tenant, state_hash, request, upstream_code_verifier, expires_at)"
            " VALUES ('acme', 'old-state', '{}', 'sealed', 9999999999)"))
    engine.dispose()


def test_a_version_1_database_is_upgraded_keeping_its_clients_and_dropping_unbound_logins(sql_url, ring):
    _version_1_database(sql_url, ring)
    with pytest.raises(SchemaOutdated, match="version 1, this program needs"):
        open_store(sql_url, ring)
    store = open_store(sql_url, ring, upgrade=True)
    try:
        with store.engine.connect() as conn:
            assert version_of(conn) == LATEST
            for table, column in _ADDED_SINCE_1:
                assert column in {c["name"] for c in sqlalchemy.inspect(conn).get_columns(table)}
        assert store.get_client("acme", "mcp_client_old") is not None
        # The login begun before the upgrade had no browser to check: gone.
        assert store.take_auth_session("acme", "old-state", 0) is None
        fresh = session()
        store.save_auth_session(fresh)
        assert store.take_auth_session("acme", fresh.state_hash, T0) == fresh
    finally:
        store.engine.dispose()

