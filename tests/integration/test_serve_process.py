"""``mcp-oauth-proxy serve --config FILE``, as a real server process on a
loopback port, with a TOML config whose tenant's upstream is the real
identity provider process (``kind = "oidc"`` found by discovery, and
``kind = "github"`` with its endpoints pointed at the GitHub-shaped IdP),
secrets from the environment; the whole flow over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import attrs
import httpx
import pytest

from realidp_browser import Person, Walk, walk_sync
from processes import free_port, stop_process, wait_until
from realidp import ADA, GRACE, IdP

CLIENT_REDIRECT = "http://127.0.0.1:33418/callback"
DEADLINE = 30.0

CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
database = "memory://"
access_log = true

[[tenants]]
slug = "acme"
issuer = "{base}"
resource = "{base}/mcp"
scopes = ["mcp"]

[tenants.upstream]
kind = "{kind}"
client_id = "{client_id}"
client_secret_env = "TEST_IDP_CLIENT_SECRET"
{upstream}
"""


@attrs.define
class Proxy:
    base: str
    idp: IdP
    log: Path


@pytest.fixture(params=[("oidc", "asyncio"), ("github", "trio")], ids=["oidc-asyncio", "github-trio"])
def proxy(request: pytest.FixtureRequest, start_idp, tmp_path: Path) -> Iterator[Proxy]:
    kind, loop = request.param
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    idp = start_idp([f"{base}/oauth/callback"], mode=kind)
    if kind == "oidc":
        upstream = f'issuer = "{idp.issuer}"\nscopes = ["openid", "profile", "email"]'
    else:
        upstream = (f'authorization_endpoint = "{idp.authorization_endpoint}"\n'
                    f'token_endpoint = "{idp.token_endpoint}"\n'
                    f'userinfo_endpoint = "{idp.userinfo_endpoint}"')
    config = tmp_path / "mcp-oauth-proxy.toml"
    config.write_text(CONFIG.format(port=port, base=base, kind=kind, client_id=idp.client_id, upstream=upstream))
    check = subprocess.run([sys.executable, "-m", "mcp_oauth_proxy.cli", "check-config", str(config)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    cmd = [sys.executable, "-m", "mcp_oauth_proxy.cli", "--log-json", "serve", "--config", str(config)]
    if loop == "trio":
        cmd.append("--trio")
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=tmp_path,
                                env={**os.environ, "TEST_IDP_CLIENT_SECRET": idp.client_secret})
    try:
        wait_until(lambda: httpx.get(f"{base}/.well-known/oauth-authorization-server", timeout=2,
                                     trust_env=False).status_code == 200,
                   DEADLINE, "mcp-oauth-proxy serve", proc, log)
        yield Proxy(base, idp, log)
    finally:
        stop_process(proc)
        idp.stop()
    assert proc.returncode == 0, log.read_text()[-3000:]


def test_whole_flow_through_the_server_process(proxy: Proxy) -> None:
    base, resource = proxy.base, f"{proxy.base}/mcp"
    person = ADA if proxy.idp.mode == "oidc" else GRACE
    with httpx.Client(trust_env=False, timeout=20) as http:
        denied = http.post(resource, json={})
        assert denied.status_code == 401
        prm_url = re.search(r'resource_metadata="([^"]+)"', denied.headers["www-authenticate"]).group(1)
        assert http.get(prm_url).json()["authorization_servers"] == [base]
        meta = http.get(f"{base}/.well-known/oauth-authorization-server").json()
        registered = http.post(meta["registration_endpoint"], json={
            "redirect_uris": [CLIENT_REDIRECT], "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"]})
        assert registered.status_code == 201, registered.text
        client_id = registered.json()["client_id"]
        verifier = secrets.token_urlsafe(48)
        walk = Walk()
        state = secrets.token_urlsafe(24)
        params = walk_sync(http, meta["authorization_endpoint"] + "?" + urlencode({
            "response_type": "code", "client_id": client_id, "redirect_uri": CLIENT_REDIRECT, "state": state,
            "code_challenge_method": "S256", "resource": resource,
            "code_challenge": base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=").decode()}), CLIENT_REDIRECT, Person(person["username"], person["password"]), walk)
        assert params["iss"] == base and params["state"] == state and "code" in params, params
        assert any(v.url.startswith(f"{base}/oauth/callback?") and v.status == 302 for v in walk.visits)
        tokens = http.post(meta["token_endpoint"], data={
            "grant_type": "authorization_code", "code": params["code"], "redirect_uri": CLIENT_REDIRECT,
            "client_id": client_id, "code_verifier": verifier})
        assert tokens.status_code == 200, tokens.text
        access, refresh = tokens.json()["access_token"], tokens.json()["refresh_token"]

        # Who the proxy thinks this is: the userinfo endpoint answers for the
        # person who logged in at the identity provider.
        me = http.get(meta["userinfo_endpoint"], headers={"authorization": f"Bearer {access}"})
        assert me.status_code == 200, me.text
        assert me.json()["sub"] == (person["sub"] if proxy.idp.mode == "oidc" else str(person["id"]))

        # The guard lets the token through to the resource (no backend is
        # configured here, so what answers behind it is not the guard's 401).
        through = http.post(resource, json={}, headers={"authorization": f"Bearer {access}"})
        assert through.status_code not in (401, 403), through.text
        assert "www-authenticate" not in through.headers

        renewed = http.post(meta["token_endpoint"], data={
            "grant_type": "refresh_token", "refresh_token": refresh, "client_id": client_id})
        assert renewed.status_code == 200, renewed.text
        access2 = renewed.json()["access_token"]
        assert http.post(resource, json={}, headers={"authorization": f"Bearer {access2}"}).status_code != 401

        revoked = http.post(meta["revocation_endpoint"], data={
            "token": renewed.json()["refresh_token"], "client_id": client_id})
        assert revoked.status_code == 200
        for token in (access, access2):
            refused = http.post(resource, json={}, headers={"authorization": f"Bearer {token}"})
            assert refused.status_code == 401
            assert 'error="invalid_token"' in refused.headers["www-authenticate"]

    # The access log: one line per request, and nothing secret in the whole log.
    lines = [json.loads(line) for line in proxy.log.read_text().splitlines() if line.startswith("{")]
    access_lines = [line for line in lines if line["logger"] == "mcp_oauth_proxy.access"]
    authorize = next(line for line in access_lines if line["path"] == "/oauth/authorize")
    assert authorize["tenant"] == "acme" and authorize["status"] == 200
    assert f"state={len(state)}" in authorize["query"] and f"client_id={len(client_id)}" in authorize["query"]
    guarded = [line for line in access_lines if line["path"] == "/mcp" and line["status"] != 401]
    assert guarded and all(line["client_id"] == client_id for line in guarded)
    assert all({"method", "status", "duration_ms", "bytes"} <= set(line) for line in access_lines)
    upstream_codes = [parse_qs(urlsplit(v.url).query).get("code", [""])[0] for v in walk.visits
                      if v.url.startswith(f"{base}/oauth/callback?")]
    everything = proxy.log.read_text()
    for secret in (state, verifier, params["code"], access, refresh, access2, renewed.json()["refresh_token"],
                   proxy.idp.client_secret, *upstream_codes):
        assert secret and secret not in everything, secret[:12]


def test_server_app_runs_the_backends_lifespan() -> None:
    import anyio

    from realidp_apps import lifespan
    from mcp_oauth_proxy import config as config_mod
    from mcp_oauth_proxy.app import build_app

    seen: list[str] = []

    async def backend(scope: dict, receive, send) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            seen.append(message["type"])
            kind = message["type"].rsplit(".", 1)[-1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return

    config = config_mod.parse({"tenants": [{
        "slug": "acme", "issuer": "http://127.0.0.1:9", "resource": "http://127.0.0.1:9/mcp",
        "upstream": {"kind": "github", "client_id": "id", "client_secret": "secret"}}]})

    async def run() -> None:
        async with lifespan(build_app(config, {}, backend=backend)):
            pass

    anyio.run(run)
    assert seen == ["lifespan.startup", "lifespan.shutdown"]
