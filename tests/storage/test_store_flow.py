"""The whole flow through the core's router on the SQL store: it works,
survives a restart, and leaves no secret readable in any table."""

from __future__ import annotations

import pytest
import sqlalchemy

from support import Harness, params_of
from mcp_oauth_proxy.core.http import Response
from mcp_oauth_proxy.storage.open import open_store
from mcp_oauth_proxy.storage.schema import metadata


def _dump(store) -> str:
    """Every row of every table, every column, as text."""
    with store.engine.connect() as conn:
        names = sqlalchemy.inspect(conn).get_table_names()
        assert set(metadata.tables) <= set(names)
        return repr({name: conn.execute(sqlalchemy.text(f"SELECT * FROM {name}")).all() for name in names})


def test_a_flow_on_the_sql_store_survives_restarts_between_its_steps(sql_url, ring):
    h = Harness(store=open_store(sql_url, ring))
    client = h.register()
    params = h.login(client["client_id"])
    h.store.engine.dispose()

    h.store = open_store(sql_url, ring)  # restarted between callback and token
    response = h.redeem(client["client_id"], params["code"])
    assert response.status == 200, response.body
    tokens = response.json()
    assert tokens["access_token"].startswith("mcp_at_")
    h.store.engine.dispose()

    h.store = open_store(sql_url, ring)  # and again: the tokens still work
    assert not isinstance(h.guard(tokens["access_token"]), Response)
    refreshed = h.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                         "client_id": client["client_id"]})
    assert refreshed.status == 200, refreshed.body
    assert h.redeem(client["client_id"], params["code"]).status == 400  # a code is used once
    # ...and its replay revoked the family: the refreshed tokens are gone too.
    denied = h.guard(refreshed.json()["access_token"])
    assert isinstance(denied, Response) and denied.status == 401
    h.store.engine.dispose()


def test_after_a_full_flow_no_table_holds_a_secret_in_plain_text(sql_url, ring):
    h = Harness(store=open_store(sql_url, ring))
    client, tokens = h.tokens(token_endpoint_auth_method="client_secret_post")
    refreshed = h.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                         "client_id": client["client_id"], "client_secret": client["client_secret"]}).json()
    # A login in progress: its state and our upstream PKCE verifier are stored.
    page = h.request("GET", h.authorize_url(client["client_id"]))
    upstream = params_of(page.header("location"))
    sent = [r for r in h.idp.sent if b"code_verifier=" in r.body][0].body.decode()
    verifier = sent.split("code_verifier=")[1].split("&")[0]
    dump = _dump(h.store)
    secrets = [
        client["client_secret"], tokens["access_token"], tokens["refresh_token"], refreshed["access_token"],
        refreshed["refresh_token"], "upstream-at-1", "upstream-rt-1", "upstream-at", "upstream-rt",
        upstream["state"], verifier, "upstream-secret-value",
    ]
    for secret in secrets:
        assert secret not in dump, secret
    # ...and it is really the whole content we looked at.
    assert client["client_id"] in dump and "user-42" in dump and "auth_sessions" in dump
    h.store.engine.dispose()


@pytest.mark.parametrize("table", ["access_tokens", "refresh_tokens", "audit_events"])
def test_a_database_failure_while_a_code_is_redeemed_loses_no_login(sql_url, ring, table):
    """The code grant spends its code, stores its tokens and keeps its audit
    event in one transaction: a failure anywhere in it spends nothing, so the
    client's retry gets its tokens (and is no replay that revokes the login)."""
    h = Harness(store=open_store(sql_url, ring))
    client = h.register()
    params = h.login(client["client_id"])
    dbapi_failure = h.store.engine.dialect.dbapi.OperationalError
    armed = [True]

    def fail_once(conn, cursor, statement, parameters, context, executemany):
        if armed[0] and statement.lstrip().upper().startswith(f"INSERT INTO {table.upper()}"):
            armed[0] = False
            raise dbapi_failure("injected: the database went away")

    sqlalchemy.event.listen(h.store.engine, "before_cursor_execute", fail_once)
    try:
        failed = h.redeem(client["client_id"], params["code"])
    finally:
        sqlalchemy.event.remove(h.store.engine, "before_cursor_execute", fail_once)
    assert not armed[0], f"no INSERT INTO {table} was made"
    assert failed.status == 503, failed.body
    with h.store.engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT COUNT(*) FROM access_tokens")).scalar() == 0

    retried = h.redeem(client["client_id"], params["code"])
    assert retried.status == 200, retried.body
    assert not isinstance(h.guard(retried.json()["access_token"]), Response)
    assert [e.event for e in h.store.list_audit_events(10, tenant=h.tenant.slug)].count("tokens_issued") == 1
    h.store.engine.dispose()
