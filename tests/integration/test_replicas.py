"""Replicas without sticky sessions, and durability.

Two ``mcp-oauth-proxy serve`` processes share one PostgreSQL database and one
key file behind a "load balancer" (this test's transport, which picks the
replica per request while the browser sees one host): a flow authorized on
A, consented and called back on B, redeemed on A and used on B completes.
And a server killed with SIGKILL between callback and token, then restarted
on the same database, still redeems the code, and tokens issued before a
restart still work after it."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import attrs
import httpx
import pytest
import sqlalchemy

from processes import free_port, stop_process, wait_until
from realidp import ADA, IdP
from realidp_browser import Person, walk_sync

PUBLIC = "http://replica.test"
PG = "postgresql://postgres@127.0.0.1:5432/test"
CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
database = "{database}"
key_file = "{key_file}"
token_cache_seconds = {cache}

[[tenants]]
slug = "replica"
issuer = "{public}"
resource = "{public}/mcp"
scopes = ["mcp"]

[tenants.upstream]
kind = "oidc"
issuer = "{idp_issuer}"
client_id = "{client_id}"
client_secret_env = "TEST_IDP_CLIENT_SECRET"
scopes = ["openid", "profile", "email", "offline_access"]
"""


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A schema of its own in the local PostgreSQL, dropped afterwards."""
    engine = sqlalchemy.create_engine(PG.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except sqlalchemy.exc.OperationalError as exc:
        engine.dispose()
        if os.environ.get("MCP_OAUTH_PROXY_REQUIRE_DATABASES") == "1":
            pytest.fail(f"PostgreSQL is required here but unreachable: {type(exc.orig).__name__}")
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    name = f"replicas_{secrets.token_hex(5)}"
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {name}"))
    try:
        yield f"{PG}?options=-csearch_path%3D{name}"
    finally:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA {name} CASCADE"))
        engine.dispose()


@attrs.define
class Replica:
    config: Path
    port: int
    log: Path
    env: dict[str, str]
    proc: subprocess.Popen | None = None

    def start(self) -> "Replica":
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mcp_oauth_proxy.cli", "serve", "--config", str(self.config)],
                stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=self.env)
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{self.port}/.well-known/oauth-authorization-server",
                                     headers={"host": "replica.test"}, trust_env=False, timeout=2).status_code == 200,
                   30, "a replica", self.proc, self.log)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def _replica(tmp_path: Path, name: str, database: str, idp: IdP, cache: float = 0) -> Replica:
    port = free_port()
    config = tmp_path / f"{name}.toml"
    config.write_text(CONFIG.format(port=port, database=database, key_file=tmp_path / "shared.keys", cache=cache,
                                    public=PUBLIC, idp_issuer=idp.issuer, client_id=idp.client_id))
    env = {**os.environ, "TEST_IDP_CLIENT_SECRET": idp.client_secret}
    return Replica(config, port, tmp_path / f"{name}.log", env)


class Balancer(httpx.BaseTransport):
    """Sends the public host's requests to the replica ``pick`` names for the
    path; everything else (the identity provider) goes out as it is."""

    def __init__(self, pick: Callable[[str], Replica]) -> None:
        self.pick = pick
        self.inner = httpx.HTTPTransport(trust_env=False)
        self.seen: list[tuple[str, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "replica.test":
            replica = self.pick(request.url.path)
            self.seen.append((request.url.path, replica.port))
            # A copy: the browser's cookie jar must see the public host.
            headers = dict(request.headers)
            headers["host"] = "replica.test"
            request = httpx.Request(request.method, request.url.copy_with(host="127.0.0.1", port=replica.port),
                                    headers=headers, content=request.read())
        return self.inner.handle_request(request)


def _register(browser: httpx.Client, redirect_uri: str) -> str:
    r = browser.post(f"{PUBLIC}/oauth/register", json={
        "redirect_uris": [redirect_uri], "token_endpoint_auth_method": "none", "client_name": "replica test",
        "grant_types": ["authorization_code", "refresh_token"], "application_type": "native"})
    assert r.status_code == 201, r.text
    return r.json()["client_id"]


def _authorize_url(client_id: str, redirect_uri: str) -> str:
    from support import CHALLENGE

    return f"{PUBLIC}/oauth/authorize?" + httpx.QueryParams({
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "state": "s1",
        "code_challenge": CHALLENGE, "code_challenge_method": "S256", "resource": f"{PUBLIC}/mcp"}).__str__()


def _redeem(browser: httpx.Client, client_id: str, code: str, redirect_uri: str) -> httpx.Response:
    from support import VERIFIER

    return browser.post(f"{PUBLIC}/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
        "code_verifier": VERIFIER, "client_id": client_id})


@pytest.mark.parametrize("cache", [0, 1])
def test_a_flow_moves_between_two_replicas_on_one_postgresql(start_idp, pg_database: str, tmp_path: Path,
                                                             cache: float) -> None:
    """With token_cache_seconds = 0 revocation on A bites on B at once; with
    a cache, B may accept the revoked token at most that long."""
    idp = start_idp([f"{PUBLIC}/oauth/callback"])
    a = _replica(tmp_path, "a", pg_database, idp, cache).start()
    b = _replica(tmp_path, "b", pg_database, idp, cache).start()
    try:
        # authorize on A; consent and callback on B; token on A; guard on B.
        route = {"/oauth/authorize": a, "/oauth/consent": b, "/oauth/callback": b, "/oauth/token": a,
                 "/oauth/register": a}
        balancer = Balancer(lambda path: route.get(path, b))
        redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
        with httpx.Client(transport=balancer, timeout=20) as browser:
            client_id = _register(browser, redirect_uri)
            got = walk_sync(browser, _authorize_url(client_id, redirect_uri), redirect_uri,
                            Person(ADA["username"], ADA["password"]))
            assert got["iss"] == PUBLIC and got["state"] == "s1"
            tokens = _redeem(browser, client_id, got["code"], redirect_uri)
            assert tokens.status_code == 200, tokens.text
            bearer = {"authorization": f"Bearer {tokens.json()['access_token']}"}
            me = browser.get(f"{PUBLIC}/oauth/userinfo", headers=bearer)
            assert me.status_code == 200 and me.json()["sub"] == ADA["sub"]
            # The guard on B lets the token through (no backend: a 404 behind the guard).
            behind = browser.post(f"{PUBLIC}/mcp", headers=bearer, json={})
            assert behind.status_code == 404 and behind.json()["error"] == "not_found"
            assert browser.post(f"{PUBLIC}/mcp", json={}).status_code == 401
            # Refresh on B, revoke on A: B refuses the token afterwards.
            route["/oauth/token"] = b
            refreshed = browser.post(f"{PUBLIC}/oauth/token", data={
                "grant_type": "refresh_token", "refresh_token": tokens.json()["refresh_token"], "client_id": client_id})
            assert refreshed.status_code == 200, refreshed.text
            route["/oauth/revoke"] = a
            assert browser.post(f"{PUBLIC}/oauth/revoke", data={
                "token": refreshed.json()["refresh_token"], "client_id": client_id}).status_code == 200
            revoked_at = time.monotonic()
            while browser.post(f"{PUBLIC}/mcp", headers=bearer, json={}).status_code != 401:
                assert cache and time.monotonic() - revoked_at < cache + 3, "B kept accepting a revoked token"
                time.sleep(0.05)
        used = {port for _, port in balancer.seen}
        assert used == {a.port, b.port}
        assert (("/oauth/consent", b.port) in balancer.seen) and (("/oauth/authorize", a.port) in balancer.seen)
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_sigkill_between_callback_and_token_loses_nothing(start_idp, request, tmp_path: Path, database: str) -> None:
    db = f"sqlite:///{tmp_path / 'proxy.db'}" if database == "sqlite" else request.getfixturevalue("pg_database")
    idp = start_idp([f"{PUBLIC}/oauth/callback"])
    server = _replica(tmp_path, "only", db, idp).start()
    try:
        redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
        with httpx.Client(transport=Balancer(lambda path: server), timeout=20) as browser:
            client_id = _register(browser, redirect_uri)
            got = walk_sync(browser, _authorize_url(client_id, redirect_uri), redirect_uri,
                            Person(ADA["username"], ADA["password"]))
            server.kill9()
            server.start()
            tokens = _redeem(browser, client_id, got["code"], redirect_uri)
            assert tokens.status_code == 200, tokens.text
            bearer = {"authorization": f"Bearer {tokens.json()['access_token']}"}
            server.kill9()
            server.start()
            assert browser.post(f"{PUBLIC}/mcp", headers=bearer, json={}).status_code == 404  # past the guard
            assert browser.get(f"{PUBLIC}/oauth/userinfo", headers=bearer).json()["sub"] == ADA["sub"]
            refreshed = browser.post(f"{PUBLIC}/oauth/token", data={
                "grant_type": "refresh_token", "refresh_token": tokens.json()["refresh_token"], "client_id": client_id})
            assert refreshed.status_code == 200
    finally:
        server.stop()
