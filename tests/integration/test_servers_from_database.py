"""Servers kept in the database, end to end: two ``serve`` replicas on one
database (a SQLite file, PostgreSQL); an organization, an OAuth
configuration pointing at the real OpenID provider and a server made with
the CLI; within two seconds both replicas serve the new server's metadata,
and an MCP client logs in through it; then another configuration for the
server revokes the grant: its token is refused by both replicas within two
seconds (their token caches remember tokens for 300 s)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlencode

import httpx
import pytest

from databases import isolated_database
from processes import free_port, stop_process, tail, wait_until
from realidp import ADA
from realidp_browser import Person, walk_sync

CLIENT_REDIRECT = "http://127.0.0.1:33418/callback"
WITHIN = 2.0

CONFIG = """\
[server]
listen = "127.0.0.1:{listen}"
database = "{database}"
key_file = "{keys}"
token_cache_seconds = 300
# The OpenID provider runs on loopback: organizations' configurations may reach it.
organization_upstream_networks = ["127.0.0.0/8"]

[[tenants]]
slug = "acme"
issuer = "{base}"
resource = "{base}/mcp"

[tenants.upstream]
kind = "github"
client_id = "cid"
client_secret = "file-secret"
"""


@pytest.fixture(params=[("sqlite", "asyncio"), pytest.param(("postgresql", "trio"), marks=pytest.mark.postgresql)],
                ids=["sqlite-asyncio", "postgresql-trio"])
def setting(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    kind, loop = request.param
    for url in isolated_database(kind, tmp_path):
        yield url, loop


def _serve(config: Path, loop: str, log: Path, host: str, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mcp_oauth_proxy.cli", "serve", "--config", str(config)]
    if loop == "trio":
        cmd.append("--trio")
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=config.parent)
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/.well-known/oauth-authorization-server", timeout=2,
                                 headers={"host": host}, trust_env=False).status_code == 200,
               30, "serve", proc, log)
    return proc


def _cli(config: Path, *argv: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "mcp_oauth_proxy.cli", *argv, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return done.stdout


def _within(check: Callable[[], bool], what: str, seconds: float = WITHIN) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, f"not within {seconds} s: {what}"
        time.sleep(0.05)
    return time.monotonic() - started


BACKEND = Path(__file__).parent.parent / "adapters" / "forward_backend.py"


def _start_backend(port: int, log: Path) -> subprocess.Popen:
    """The forwarding tests' MCP server; ``/control/seen`` lists what reached it."""
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(BACKEND), str(port)], stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL)
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/control/seen", trust_env=False, timeout=2)
               .status_code == 200, 30, "the backend MCP server", proc, log)
    return proc


def _log_in(http: httpx.Client, meta: dict, resource: str, issuer: str) -> str:
    """An MCP client registers, and Ada logs in at the real OpenID provider: its access token."""
    registered = http.post(meta["registration_endpoint"], json={
        "redirect_uris": [CLIENT_REDIRECT], "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"]})
    assert registered.status_code == 201, registered.text
    client_id = registered.json()["client_id"]
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = walk_sync(http, meta["authorization_endpoint"] + "?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": CLIENT_REDIRECT, "state": "st",
        "code_challenge_method": "S256", "code_challenge": challenge, "resource": resource}),
        CLIENT_REDIRECT, Person(ADA["username"], ADA["password"]))
    assert params["iss"] == issuer and "code" in params, params
    tokens = http.post(meta["token_endpoint"], data={
        "grant_type": "authorization_code", "code": params["code"], "redirect_uri": CLIENT_REDIRECT,
        "client_id": client_id, "code_verifier": verifier})
    assert tokens.status_code == 200, tokens.text
    access = tokens.json()["access_token"]
    me = http.get(meta["userinfo_endpoint"], headers={"authorization": f"Bearer {access}"})
    assert me.status_code == 200 and me.json()["sub"] == ADA["sub"], me.text
    return str(access)


def test_a_server_made_with_the_cli_is_served_by_every_replica_and_its_grants_follow_its_configuration(
        setting: tuple[str, str], start_idp, tmp_path: Path) -> None:
    database, loop = setting
    port, other = free_port(), free_port()
    host, base = f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"
    issuer, resource = f"{base}/beta", f"{base}/beta/mcp"
    idp = start_idp([f"{issuer}/oauth/callback"], mode="oidc")
    keys = tmp_path / "shared.keys"
    configs = []
    for name, listen in (("a", port), ("b", other)):
        path = tmp_path / name / "proxy.toml"
        path.parent.mkdir()
        path.write_text(CONFIG.format(listen=listen, database=database, keys=keys, base=base))
        configs.append(path)
    replicas = []
    try:
        replicas.append(_serve(configs[0], loop, tmp_path / "a.log", host, port))
        replicas.append(_serve(configs[1], loop, tmp_path / "b.log", host, other))
        with httpx.Client(trust_env=False, timeout=20) as http:
            def metadata(at: int) -> httpx.Response:
                return http.get(f"http://127.0.0.1:{at}/.well-known/oauth-authorization-server/beta",
                                headers={"host": host})

            def served(at: int) -> bool:
                answer = metadata(at)
                return answer.status_code == 200 and answer.json()["issuer"] == issuer

            assert not served(port) and not served(other)
            secret_env = {"IDP_SECRET": idp.client_secret}
            _cli(configs[0], "organizations", "create", "acme-corp")
            _cli(configs[0], "oauth-configs", "create", "local-idp", "--organization", "acme-corp", "--kind", "oidc",
                 "--issuer", idp.issuer, "--client-id", idp.client_id, "--client-secret-env", "IDP_SECRET",
                 "--scope", "openid", "--scope", "profile", "--scope", "email", env=secret_env)
            _cli(configs[0], "servers", "create", "beta", "--organization", "acme-corp", "--oauth-config", "local-idp",
                 "--issuer", issuer, "--resource", resource)
            # Both replicas serve it within two seconds of its creation.
            _within(lambda: served(port), "replica A serves the new server")
            _within(lambda: served(other), "replica B serves the new server")
            assert http.get(f"{base}/.well-known/oauth-authorization-server").json()["issuer"] == base  # the file's

            # An MCP client logs in through it, at the real OpenID provider.
            denied = http.post(resource, json={})
            assert denied.status_code == 401
            assert f"{base}/.well-known/oauth-protected-resource/beta/mcp" in denied.headers["www-authenticate"]
            access = _log_in(http, metadata(port).json(), resource, issuer)

            def status(at: int) -> int:
                return http.post(f"http://127.0.0.1:{at}/beta/mcp", json={},
                                 headers={"host": host, "authorization": f"Bearer {access}"}).status_code

            # Past the guard on both (no backend: the forwarder's 404), and now remembered by both.
            assert status(port) == status(other) == 404

            # Another configuration for the server: its grant goes, everywhere, within two seconds.
            _cli(configs[1], "oauth-configs", "create", "other", "--organization", "acme-corp", "--kind", "github",
                 "--client-id", "gh", "--client-secret-env", "IDP_SECRET", env=secret_env)
            out = _cli(configs[1], "servers", "update", "beta", "--oauth-config", "other")
            assert "revoked 1 grant(s) made through acme-corp/local-idp" in out, out
            _within(lambda: status(port) == 401, "replica A refuses the revoked token")
            _within(lambda: status(other) == 401, "replica B refuses the revoked token")
            # The configuration in use by nobody now can go; the one in use cannot.
            refused = subprocess.run([sys.executable, "-m", "mcp_oauth_proxy.cli", "oauth-configs", "delete", "other",
                                      "--organization", "acme-corp", "--config", str(configs[0])],
                                     capture_output=True, text=True, timeout=60)
            assert refused.returncode == 1
            assert refused.stderr == "error: OAuth configuration acme-corp/other is used by server(s) beta\n"
            _cli(configs[0], "oauth-configs", "delete", "local-idp", "--organization", "acme-corp")
            _cli(configs[0], "servers", "delete", "beta")
            _within(lambda: metadata(other).status_code != 200 or not served(other), "replica B drops the server")
    finally:
        for proc in replicas:
            stop_process(proc)
    for proc, log in zip(replicas, ("a.log", "b.log")):
        assert proc.returncode == 0, tail(tmp_path / log)


def test_a_deployment_whose_servers_are_all_in_the_database(tmp_path: Path) -> None:
    """No [[tenants]] in the file: `serve` starts serving nothing, and a
    server made with the CLI is served within two seconds."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "proxy.toml"
    config.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\ndatabase = "sqlite:///{tmp_path / "proxy.db"}"\n'
                      f'key_file = "{tmp_path / "keys"}"\n')
    cmd = [sys.executable, "-m", "mcp_oauth_proxy.cli", "serve", "--config", str(config)]
    with (tmp_path / "serve.log").open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=tmp_path)
    try:
        with httpx.Client(trust_env=False, timeout=10) as http:
            wait_until(lambda: http.get(f"{base}/.well-known/oauth-authorization-server").status_code == 404,
                       30, "serve", proc, tmp_path / "serve.log")
            _cli(config, "organizations", "create", "acme-corp")
            _cli(config, "oauth-configs", "create", "gh", "--organization", "acme-corp", "--kind", "github",
                 "--client-id", "gh", "--client-secret-env", "GH_SECRET", env={"GH_SECRET": "s3cret"})
            _cli(config, "servers", "create", "solo", "--organization", "acme-corp", "--oauth-config", "gh",
                 "--issuer", base, "--resource", f"{base}/mcp")

            def served() -> bool:
                answer = http.get(f"{base}/.well-known/oauth-authorization-server")
                return answer.status_code == 200 and answer.json()["issuer"] == base

            _within(served, "the server made with the CLI is served")
            assert http.post(f"{base}/mcp", json={}).status_code == 401
    finally:
        stop_process(proc)
    assert proc.returncode == 0, tail(tmp_path / "serve.log")


def test_the_whole_thing_through_the_admin_api(setting: tuple[str, str], start_idp, tmp_path: Path) -> None:
    """With both replicas running: an admin token made with the CLI; an
    organization, an OAuth configuration at the real OpenID provider and a
    server made through replica A's admin API; an MCP client logs in to
    the new server at once; a switch to another configuration says how many
    grants it revoked; a person's grant revoked through the API is refused by
    both replicas within two seconds; the audit log tells all of it, with
    the actor, and no secret."""
    database, loop = setting
    port, other, admin_port, backend_port = free_port(), free_port(), free_port(), free_port()
    host, base = f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"
    issuer, resource = f"{base}/gamma", f"{base}/gamma/mcp"
    idp = start_idp([f"{issuer}/oauth/callback"], mode="oidc")
    keys = tmp_path / "shared.keys"
    configs = []
    for name, listen in (("a", port), ("b", other)):
        path = tmp_path / name / "proxy.toml"
        path.parent.mkdir()
        text = CONFIG.format(listen=listen, database=database, keys=keys, base=base)
        if name == "a":
            text = text.replace("[server]\n", f'[server]\nadmin_listen = "127.0.0.1:{admin_port}"\n')
        path.write_text(text)
        configs.append(path)
    api = f"http://127.0.0.1:{admin_port}/admin/api/v1"
    replicas = []
    backend = _start_backend(backend_port, tmp_path / "backend.log")  # an MCP server the new server forwards to
    try:
        replicas.append(_serve(configs[0], loop, tmp_path / "a.log", host, port))
        replicas.append(_serve(configs[1], loop, tmp_path / "b.log", host, other))
        made = _cli(configs[0], "admin", "create-token", "--label", "e2e", "--json")
        token = json.loads(made)["token"]
        assert token.startswith("mcp_admin_")
        with httpx.Client(trust_env=False, timeout=20) as http, \
                httpx.Client(trust_env=False, timeout=20, base_url=api,
                             headers={"authorization": f"Bearer {token}"}) as admin:
            assert http.get(f"http://127.0.0.1:{other}/admin/api/v1/organizations").status_code == 404  # public side
            assert admin.post("/organizations", json={"name": "acme-corp"}).status_code == 201
            made_config = admin.post("/oauth-configs", json={
                "organization": "acme-corp", "name": "local-idp", "kind": "oidc", "issuer": idp.issuer,
                "client_id": idp.client_id, "client_secret": idp.client_secret,
                "scopes": ["openid", "profile", "email"]})
            assert made_config.status_code == 201, made_config.text
            assert made_config.json()["client_secret"] == "set"
            made_server = admin.post("/servers", json={
                "slug": "gamma", "organization": "acme-corp", "oauth_config": "local-idp", "issuer": issuer,
                "resource": resource, "backend": f"http://127.0.0.1:{backend_port}/mcp"})
            assert made_server.status_code == 201, made_server.text

            def metadata(at: int) -> httpx.Response:
                return http.get(f"http://127.0.0.1:{at}/.well-known/oauth-authorization-server/gamma",
                                headers={"host": host})

            _within(lambda: metadata(port).status_code == 200, "replica A serves the new server")
            _within(lambda: metadata(other).status_code == 200, "replica B serves the new server")
            access = _log_in(http, metadata(port).json(), resource, issuer)

            def status(at: int) -> int:
                return http.post(f"http://127.0.0.1:{at}/gamma/mcp", json={},
                                 headers={"host": host, "authorization": f"Bearer {access}"}).status_code

            # Past the guard on both, forwarded to the backend with the person's identity, remembered by both.
            assert status(port) != 401 and status(other) != 401
            seen = http.get(f"http://127.0.0.1:{backend_port}/control/seen").json()["seen"]
            assert len(seen) == 2 and all(["x-mcp-user", ADA["sub"]] in r["headers"] for r in seen), seen
            (grant,) = admin.get("/grants", params={"server": "gamma"}).json()["items"]
            assert grant["user_id"] and grant["client_id"]
            (client,) = admin.get("/servers/gamma/clients").json()["items"]
            assert client["client_id"] == grant["client_id"] and client["used"] is True

            # A person's grant, revoked through the API: refused everywhere within two seconds.
            assert admin.delete(f"/grants/gamma/{grant['grant_id']}").status_code == 200
            _within(lambda: status(port) == 401, "replica A refuses the revoked token")
            _within(lambda: status(other) == 401, "replica B refuses the revoked token")

            # Another login, then another configuration: the switch says what it revoked.
            access = _log_in(http, metadata(other).json(), resource, issuer)
            assert status(other) != 401
            assert admin.post("/oauth-configs", json={
                "organization": "acme-corp", "name": "gh", "kind": "github", "client_id": "gh",
                "client_secret": "gh-s3cret"}).status_code == 201
            switched = admin.patch("/servers/gamma", json={"oauth_config": "gh"})
            assert switched.status_code == 200 and switched.json()["revoked_grants"] == 1
            _within(lambda: status(other) == 401, "replica B refuses the token of the old configuration")
            in_use = admin.delete("/oauth-configs/acme-corp/gh")
            assert in_use.status_code == 409 and "gamma" in in_use.json()["detail"]

            # The audit log: the logins (from both replicas), the admin actions with their actor.
            events = admin.get("/audit", params={"server": "gamma", "limit": "500"}).json()["items"]
            kinds = [e["event"] for e in events]
            assert kinds.count("login_completed") == 2 and "admin.grant_revoked" in kinds, kinds
            tokens = json.loads(_cli(configs[0], "admin", "list-tokens", "--json"))
            assert {e["actor"] for e in events if e["event"].startswith("admin.")} == {tokens[0]["token_id"]}
            everything = admin.get("/audit", params={"limit": "500"}).text
            for secret in (idp.client_secret, "gh-s3cret", access, token):
                assert secret not in everything
    finally:
        for proc in replicas:
            stop_process(proc)
        stop_process(backend)
    for proc, log in zip(replicas, ("a.log", "b.log")):
        assert proc.returncode == 0, tail(tmp_path / log)
