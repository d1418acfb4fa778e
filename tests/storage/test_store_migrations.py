"""Schema versions, kept by Alembic: an empty database is created on first
open; an older one is upgraded only when asked; a database of a release
before Alembic is recognised; the revisions build what schema.py defines."""

from __future__ import annotations

import contextlib
import multiprocessing
from typing import Iterator

import pytest
import sqlalchemy
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from schema_history import add_revision, legacy_database, upgrade_to
from storage_records import T0, access, client, code, grant, refresh, session
from mcp_oauth_proxy.cli_storage import main
from mcp_oauth_proxy.core.models import Rotation
from mcp_oauth_proxy.storage import migrations, sql
from mcp_oauth_proxy.storage.crypto import KeyRing, seal_verifier
from mcp_oauth_proxy.storage.migrations import SchemaError, SchemaOutdated, version_of
from mcp_oauth_proxy.storage.open import open_store
from mcp_oauth_proxy.storage.schema import access_tokens, clients, metadata, refresh_tokens
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


# What later migrations added to the version-1 schema: columns, tables, their indexes.
_ADDED_SINCE_1 = [("auth_sessions", "browser_hash"), ("refresh_tokens", "successor_hash"), ("clients", "jwks"),
                  ("clients", "jwks_uri"), ("access_tokens", "grant_type"), ("grants", "last_used_at")]
# Columns later migrations made nullable.
_NULLABLE_SINCE_1 = [("grants", "code_hash"), ("grants", "upstream")]
_TABLES_SINCE_1 = ["revocations", "organizations", "oauth_configs", "servers", "directory_version", "admin_tokens",
                   "audit_events"]
_INDEXES_SINCE_1 = ["revocations_since", "revocations_expiry", "servers_by_issuer", "servers_by_resource",
                    "servers_by_oauth_config", "admin_tokens_by_hash", "audit_events_by_tenant",
                    "audit_events_by_organization", "audit_events_expiry"]


def _change(difference: object) -> tuple[str, str]:
    """(the kind of an autogenerate difference, the name of what it adds or
    alters: a column's as table.column)."""
    if isinstance(difference, list):  # a column's modifications: ("modify_nullable", schema, table, column, …)
        ((kind, _, table, column, *_),) = difference
        return kind, f"{table}.{column}"
    kind, *rest = difference  # type: ignore[misc]
    return kind, (rest[2] if kind == "add_column" else rest[0]).name


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


def test_a_login_saved_before_connections_sign_ins_existed_is_read_as_a_clients_authorization(sql_url, ring):
    """auth_sessions.request as releases before the connections page wrote
    it: the authorization request's fields, untagged."""
    store = open_store(sql_url, ring)
    try:
        with store.engine.begin() as conn:
            conn.execute(sqlalchemy.text(
                "INSERT INTO auth_sessions (tenant, state_hash, request, browser_hash, upstream_issuer,"
                " upstream_code_verifier, nonce, expires_at) VALUES ('acme', 'state-1', :request, :browser,"
                " 'https://idp.example', :verifier, 'n-1', :expires)"),
                {"request": '{"client_id":"client-1","redirect_uri":"http://127.0.0.1:5000/cb",'
                            '"redirect_uri_given":true,"state":"s","scope":["mcp","mcp:admin"],'
                            '"resource":"https://acme.example.com/mcp","code_challenge":"' + "c" * 43 + '"}',
                 "browser": "c" * 64, "expires": T0 + 600,
                 "verifier": seal_verifier(ring, "acme", "state-1", "the-upstream-verifier")})
        assert store.take_auth_session("acme", "state-1", T0) == session()
    finally:
        store.engine.dispose()


def _differences(url: str) -> list[object]:
    """What Alembic's autogenerate finds between the database and schema.py
    (tables, columns, types, nullability, server defaults, indexes)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={
                "compare_type": True, "compare_server_default": migrations.compare_server_default,
                "include_name": migrations.include_name})
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def test_the_revisions_build_the_schema_the_models_define(sql_url):
    # Every revision run on an empty database, not the create_all a new one gets.
    upgrade_to(sql_url, "head")
    assert _differences(sql_url) == []
    # Down to the first revision (SQLite copies each table without the
    # column) and up again.
    engine = make_engine(sql_url, bound_statements=False)
    with engine.execution_options(sqlite_write=True).begin() as conn:
        command.downgrade(migrations.alembic_config(conn), "0001")
    engine.dispose()
    assert {_change(d) for d in _differences(sql_url)} == {("add_column", c) for _, c in _ADDED_SINCE_1} | {
        ("add_table", t) for t in _TABLES_SINCE_1} | {("add_index", i) for i in _INDEXES_SINCE_1} | {
        ("modify_nullable", f"{t}.{c}") for t, c in _NULLABLE_SINCE_1}
    upgrade_to(sql_url, "head")
    assert _differences(sql_url) == []


@contextlib.contextmanager
def engine_connection(url: str) -> Iterator[sqlalchemy.Connection]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def _legacy_version(url: str) -> int | None:
    """The version the releases before Alembic read; None without their table."""
    if "schema_version" not in _tables(url):
        return None
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sqlalchemy.text("SELECT MAX(version) FROM schema_version")).scalar()
    finally:
        engine.dispose()


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_database_of_a_release_before_alembic_is_refused_untouched_then_upgraded(sql_url, ring, version):
    legacy_database(sql_url, version)
    with engine_connection(sql_url) as conn:
        assert version_of(conn) == version  # read from the table those releases kept
    with pytest.raises(SchemaOutdated, match=f"version {version}, this program needs version {LATEST}"):
        open_store(sql_url, ring)
    assert "alembic_version" not in _tables(sql_url) and _legacy_version(sql_url) == version  # untouched
    open_store(sql_url, ring, upgrade=True).engine.dispose()
    # Alembic's now; the old table is gone, so a release before Alembic refuses
    # the database rather than run on a schema it does not know.
    assert _tables(sql_url) == set(metadata.tables) | {"alembic_version"}
    assert _legacy_version(sql_url) is None
    assert _differences(sql_url) == []
    open_store(sql_url, ring).engine.dispose()


def test_a_live_grant_of_a_version_1_database_still_works_after_db_upgrade(sql_url, ring, capsys):
    legacy_database(sql_url, 1)
    old = sql.SqlStore(sql_url, ring)  # the store on the version-1 tables, before any upgrade
    g = grant(grant_id="live", client_id="client-1")
    old.save_grant_and_code(g, code(g))
    at, rt = access(g, "at-live"), refresh(g, "rt-live")
    with old.engine.begin() as conn:  # rows without the columns later versions added
        for table, record in ((clients, client()), (access_tokens, at), (refresh_tokens, rt)):
            later = {c for t, c in _ADDED_SINCE_1 if t == table.name}
            conn.execute(table.insert(), [{k: v for k, v in sql._row(record).items() if k not in later}])
    old.engine.dispose()

    assert main(["db", "upgrade", "--database", sql_url]) == 0
    assert f"applied migrations {list(range(2, LATEST + 1))}" in capsys.readouterr().out
    store = open_store(sql_url, ring)
    try:
        assert store.get_client("acme", "client-1") == client()
        assert store.get_grant("acme", "live") == g  # its upstream tokens still decrypt
        assert store.get_access_token("acme", "at-live") == at
        assert store.get_refresh_token("acme", "rt-live") == rt
        at2, rt2 = access(g, "at-live-2"), refresh(g, "rt-live-2")
        assert store.rotate_refresh_token("acme", "rt-live", T0 + 10, 30, at2, rt2) == Rotation.ROTATED
        assert store.get_access_token("acme", "at-live-2") == at2
        assert store.get_refresh_token("acme", "rt-live-2") == rt2
        # The rotated one, presented after the grace window, is reuse: the family goes.
        assert store.rotate_refresh_token("acme", "rt-live", T0 + 100, 30, at2, rt2) == Rotation.REUSED
        assert store.get_access_token("acme", "at-live") is None
    finally:
        store.engine.dispose()
