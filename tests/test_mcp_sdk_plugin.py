"""The mcp SDK plug-in (``mcp_oauth_proxy.mcp_sdk``): the store-backed
verifier against tokens issued by the real core (the test Harness), and the
introspection verifier against ``mcp-oauth-proxy serve`` as a real process
on loopback, sharing its SQLite database with a Harness that issues the
tokens. End to end: an ``MCPServer`` using the introspection verifier
answers a tool call with our token, and refuses it once revoked."""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import anyio
import attrs
import httpx
import httpx2
import pytest
from hypercorn.config import Config as HypercornConfig
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from processes import free_port, stop_process, wait_until
from support import Harness, tenant, upstream

from mcp_oauth_proxy import config as config_mod
from mcp_oauth_proxy.adapters.site import Site
from mcp_oauth_proxy.app import tenant as tenant_of
from mcp_oauth_proxy.core.errors import StorageUnavailable
from mcp_oauth_proxy.mcp_sdk import IntrospectionFailed, IntrospectionTokenVerifier, StoreTokenVerifier
from mcp_oauth_proxy.storage.crypto import KeyRing
from mcp_oauth_proxy.storage.keys import load_or_create_keyring
from mcp_oauth_proxy.storage.open import open_store

DEADLINE = 20.0
RS_ID = "mcp-server"
RS_SECRET = "rs-secret-for-tests-only-0123456789"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


def now() -> int:
    return int(time.time())


# -- StoreTokenVerifier --------------------------------------------------------


@pytest.fixture
def harness() -> Harness:
    return Harness(now=now())


@pytest.mark.anyio
async def test_store_verifier_accepts_a_valid_token_and_maps_it(harness: Harness) -> None:
    client, tokens = harness.tokens()
    verifier = StoreTokenVerifier(harness.store, harness.tenant, store_blocks=False)
    access = await verifier.verify_token(tokens["access_token"])
    assert access is not None
    assert access.token == tokens["access_token"]
    assert access.client_id == client["client_id"]
    assert access.scopes == tokens["scope"].split()
    assert access.resource == harness.tenant.resource
    assert access.subject == "user-42"
    assert access.claims == {"iss": harness.tenant.issuer}
    assert access.expires_at == harness.now + tokens["expires_in"]


@pytest.mark.anyio
async def test_store_verifier_refuses_expired_revoked_unknown_other_tenant_and_wrong_audience_tokens(
        harness: Harness) -> None:
    verifier = StoreTokenVerifier(harness.store, harness.tenant, store_blocks=False)
    harness.now = now() - harness.tenant.policy.access_token_ttl - 5
    _, old = harness.tokens()
    assert await verifier.verify_token(old["access_token"]) is None

    harness.now = now()
    client, tokens = harness.tokens()
    token = tokens["access_token"]
    assert await verifier.verify_token(token) is not None
    other_tenant = StoreTokenVerifier(harness.store, tenant("globex", "https://globex.example.com",
                                                           "https://globex.example.com/mcp"), store_blocks=False)
    assert await other_tenant.verify_token(token) is None
    other_resource = attrs.evolve(harness.tenant, resource="https://acme.example.com/other")
    assert await StoreTokenVerifier(harness.store, other_resource, store_blocks=False).verify_token(token) is None
    for unknown in ("mcp_at_" + "x" * 43, "not-one-of-ours", tokens["refresh_token"], ""):
        assert await verifier.verify_token(unknown) is None

    revoked = harness.request("POST", f"{harness.tenant.issuer}/oauth/revoke",
                              form={"token": tokens["refresh_token"], "client_id": client["client_id"]})
    assert revoked.status == 200
    assert await verifier.verify_token(token) is None


@pytest.mark.anyio
async def test_store_verifier_from_a_site_on_sqlite_runs_off_the_loop(harness: Harness, tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", KeyRing.generate())
    harness.store = store
    site = Site([harness.tenant], store, b"k" * 32, store_blocks=True)
    _, tokens = harness.tokens()
    verifier = StoreTokenVerifier(site, "acme")
    access = await verifier.verify_token(tokens["access_token"])
    assert access is not None and access.subject == "user-42"
    with pytest.raises(ValueError):
        StoreTokenVerifier(site, "globex")
    with pytest.raises(TypeError):
        StoreTokenVerifier(store, "acme")


class _DownStore:
    def get_access_token(self, tenant: str, token_hash: str) -> None:
        raise StorageUnavailable("down")


@pytest.mark.anyio
async def test_store_verifier_raises_when_the_store_is_down() -> None:
    # A 500, not a 401 that would send the client to sign in again.
    verifier = StoreTokenVerifier(_DownStore(), tenant(), store_blocks=False)  # type: ignore[arg-type]
    with pytest.raises(StorageUnavailable):
        await verifier.verify_token("mcp_at_" + "y" * 43)


# -- IntrospectionTokenVerifier against a real server process ------------------------


CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
database = "sqlite:///{db}"
key_file = "{keys}"

[[tenants]]
slug = "acme"
issuer = "{base}"
resource = "{mcp_url}"
scopes = ["mcp"]
required_scopes = ["mcp"]

[tenants.upstream]
kind = "github"
client_id = "unused-upstream-client"
client_secret = "unused-upstream-secret"

[[tenants.resource_servers]]
client_id = "{rs_id}"
secret_sha256 = "{rs_hash}"

[[tenants]]
slug = "beta"
issuer = "{base}/beta"
resource = "{base}/beta/mcp"
scopes = ["mcp"]

[tenants.upstream]
kind = "github"
client_id = "unused-upstream-client"
client_secret = "unused-upstream-secret"

[[tenants.resource_servers]]
client_id = "{rs_id}"
secret_sha256 = "{rs_hash}"
"""


@attrs.define
class Proxy:
    base: str
    mcp_url: str
    mcp_port: int
    config: config_mod.Config
    store: Any

    @property
    def introspection_url(self) -> str:
        return f"{self.base}/oauth/introspect"

    def harness(self, slug: str = "acme", at: int | None = None) -> Harness:
        """Issues tokens with the real core into the server's database."""
        t = next(t for t in self.config.tenants if t.slug == slug)
        # Harness randomness is seeded: a fresh seed range per harness, or two
        # harnesses on one database would issue the same token values.
        return Harness(tenant=attrs.evolve(tenant_of(t), upstream=upstream()), store=self.store,
                       now=now() if at is None else at, seed=secrets.randbelow(2**40) * 1000)

    def verifier(self, **kw: Any) -> IntrospectionTokenVerifier:
        kw.setdefault("resource", self.mcp_url)
        return IntrospectionTokenVerifier(kw.pop("url", self.introspection_url), RS_ID,
                                          kw.pop("secret", RS_SECRET), **kw)

    def revoke(self, client_id: str, token: str, issuer: str | None = None) -> None:
        r = httpx.post(f"{issuer or self.base}/oauth/revoke", data={"token": token, "client_id": client_id},
                       trust_env=False)
        assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    home = tmp_path_factory.mktemp("proxy")
    port, mcp_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    mcp_url = f"http://127.0.0.1:{mcp_port}/mcp"
    db, keys = home / "proxy.db", home / "proxy.keys"
    path = home / "proxy.toml"
    path.write_text(CONFIG.format(port=port, base=base, mcp_url=mcp_url, db=db, keys=keys, rs_id=RS_ID,
                                  rs_hash=hashlib.sha256(RS_SECRET.encode()).hexdigest()))
    # Key file and schema made here first, then shared with the server.
    keyring, _ = load_or_create_keyring(str(keys))
    store = open_store(f"sqlite:///{db}", keyring)
    log = home / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mcp_oauth_proxy.cli", "serve", "--config", str(path)],
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=home)
    try:
        wait_until(lambda: httpx.get(f"{base}/.well-known/oauth-authorization-server", timeout=2,
                                     trust_env=False).status_code == 200, DEADLINE, "mcp-oauth-proxy serve",
                   proc, log)
        yield Proxy(base, mcp_url, mcp_port, config_mod.load(path), store)
    finally:
        stop_process(proc, 10.0)
    assert RS_SECRET not in log.read_text()


@pytest.mark.anyio
async def test_introspection_verifier_accepts_a_valid_token(proxy: Proxy) -> None:
    h = proxy.harness()
    client, tokens = h.tokens()
    async with httpx.AsyncClient(trust_env=False) as http:
        access = await proxy.verifier(http_client=http, issuer=proxy.base).verify_token(tokens["access_token"])
    assert access is not None
    assert access.client_id == client["client_id"]
    assert access.scopes == ["mcp"]
    assert access.resource == proxy.mcp_url
    assert access.subject == "user-42"
    assert access.claims == {"iss": proxy.base}
    assert access.expires_at == h.now + h.tenant.policy.access_token_ttl
    # Without a client of our own, one per call; same answer.
    assert await proxy.verifier().verify_token(tokens["access_token"]) == access


@pytest.mark.anyio
async def test_introspection_verifier_refuses_expired_revoked_unknown_other_tenant_and_wrong_audience(
        proxy: Proxy) -> None:
    verifier = proxy.verifier()
    h = proxy.harness(at=now() - 3600 - 5)
    _, old = h.tokens()
    assert await verifier.verify_token(old["access_token"]) is None

    h = proxy.harness()
    client, tokens = h.tokens()
    token = tokens["access_token"]
    assert await verifier.verify_token(token) is not None
    # Audience binding: this server is not the resource the token is for.
    assert await proxy.verifier(resource=f"{proxy.base}/other").verify_token(token) is None
    # An issuer we were not told to expect.
    assert await proxy.verifier(issuer="https://elsewhere.example").verify_token(token) is None
    # Unknown, and a refresh token (active at introspection, but no bearer credential).
    for unknown in ("mcp_at_" + "z" * 43, "garbage", tokens["refresh_token"]):
        assert await verifier.verify_token(unknown) is None

    # Another tenant's token, asked at this tenant's endpoint; and the other way round.
    beta = proxy.harness("beta")
    _, beta_tokens = beta.tokens()
    assert await verifier.verify_token(beta_tokens["access_token"]) is None
    at_beta = proxy.verifier(url=f"{proxy.base}/beta/oauth/introspect", resource=f"{proxy.base}/beta/mcp")
    assert await at_beta.verify_token(beta_tokens["access_token"]) is not None
    assert await at_beta.verify_token(token) is None

    proxy.revoke(client["client_id"], tokens["refresh_token"])
    assert await verifier.verify_token(token) is None


@pytest.mark.anyio
async def test_introspection_verifier_raises_when_it_gets_no_answer(proxy: Proxy) -> None:
    _, tokens = proxy.harness().tokens()
    with pytest.raises(IntrospectionFailed, match="HTTP 401"):
        await proxy.verifier(secret="wrong-secret").verify_token(tokens["access_token"])
    with pytest.raises(IntrospectionFailed):
        await proxy.verifier(url=f"http://127.0.0.1:{free_port()}/oauth/introspect").verify_token(
            tokens["access_token"])
    with pytest.raises(IntrospectionFailed, match="HTTP 404"):
        await proxy.verifier(url=f"{proxy.base}/oauth/nowhere").verify_token(tokens["access_token"])
    with pytest.raises(ValueError):
        proxy.verifier(resource="not-a-url")


@pytest.mark.anyio
async def test_introspection_cache_keeps_positive_answers_only_briefly_and_never_past_exp(proxy: Proxy) -> None:
    skew = [0.0]
    calls = [0]

    async def count(request: httpx.Request) -> None:
        calls[0] += 1

    async with httpx.AsyncClient(trust_env=False, event_hooks={"request": [count]}) as http:
        verifier = proxy.verifier(http_client=http, cache_seconds=30, clock=lambda: time.time() + skew[0])
        client, tokens = proxy.harness().tokens()
        token = tokens["access_token"]
        assert await verifier.verify_token(token) is not None
        assert await verifier.verify_token(token) is not None
        assert calls[0] == 1
        assert await verifier.verify_token("mcp_at_" + "q" * 43) is None
        assert await verifier.verify_token("mcp_at_" + "q" * 43) is None
        assert calls[0] == 3  # refusals are asked every time

        proxy.revoke(client["client_id"], tokens["refresh_token"])
        assert await verifier.verify_token(token) is not None  # still cached
        skew[0] = 31
        assert await verifier.verify_token(token) is None
        assert calls[0] == 4

        # The cache never outlives the token's exp, whatever cache_seconds says.
        long = proxy.verifier(http_client=http, cache_seconds=10**6, clock=lambda: time.time() + skew[0])
        _, fresh = proxy.harness().tokens()
        skew[0] = 0
        accepted = await long.verify_token(fresh["access_token"])
        assert accepted is not None and accepted.expires_at is not None
        skew[0] = accepted.expires_at - time.time() + 2
        assert await long.verify_token(fresh["access_token"]) is None


# -- end to end: an MCPServer using the introspection verifier --------------------------


def whoami_server(verifier: IntrospectionTokenVerifier, proxy: Proxy) -> Any:
    server = MCPServer("whoami", token_verifier=verifier, auth=AuthSettings(
        issuer_url=proxy.base, resource_server_url=proxy.mcp_url, required_scopes=["mcp"],
        validate_token_resource=True))

    @server.tool()
    async def whoami() -> dict[str, Any]:
        """The person and client the token stands for."""
        access = get_access_token()
        assert access is not None
        return {"subject": access.subject, "client_id": access.client_id, "scopes": access.scopes}

    return server.streamable_http_app(streamable_http_path="/mcp")


async def _serve(app: Any, port: int, backend: str, stopped: anyio.Event) -> None:
    hyper = HypercornConfig()
    hyper.bind = [f"127.0.0.1:{port}"]
    hyper.accesslog = None
    hyper.graceful_timeout = 1
    if backend == "trio":
        from hypercorn.trio import serve
    else:
        from hypercorn.asyncio import serve  # type: ignore[assignment]
    await serve(app, hyper, shutdown_trigger=stopped.wait)  # type: ignore[arg-type]


async def _call_whoami(url: str, token: str, statuses: list[int]) -> dict[str, Any]:
    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    async with httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=20,
                                  event_hooks={"response": [record]}) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            result = await client.call_tool("whoami", {})
    assert not result.is_error, result
    return json.loads(result.content[0].text)


@pytest.mark.anyio
async def test_mcp_server_with_the_introspection_verifier_answers_our_token_and_refuses_it_once_revoked(
        proxy: Proxy, anyio_backend: str) -> None:
    client, tokens = proxy.harness().tokens()
    token = tokens["access_token"]
    async with httpx.AsyncClient(trust_env=False, timeout=10) as introspection, \
            httpx.AsyncClient(trust_env=False, timeout=10) as raw:
        app = whoami_server(proxy.verifier(http_client=introspection), proxy)
        stopped = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_serve, app, proxy.mcp_port, anyio_backend, stopped)
            try:
                with anyio.fail_after(DEADLINE):
                    while True:
                        try:
                            await raw.get(f"http://127.0.0.1:{proxy.mcp_port}/.well-known/oauth-protected-resource/mcp")
                            break
                        except httpx.ConnectError:
                            await anyio.sleep(0.05)
                    statuses: list[int] = []
                    assert await _call_whoami(proxy.mcp_url, token, statuses) == {
                        "subject": "user-42", "client_id": client["client_id"], "scopes": ["mcp"]}
                    assert 401 not in statuses

                    proxy.revoke(client["client_id"], tokens["refresh_token"])
                    refused = await raw.post(proxy.mcp_url, json={}, headers={
                        "authorization": f"Bearer {token}", "accept": "application/json, text/event-stream"})
                    assert refused.status_code == 401
                    challenge = refused.headers["www-authenticate"]
                    assert 'error="invalid_token"' in challenge and "resource_metadata=" in challenge
                    statuses.clear()
                    with pytest.raises(Exception):  # the SDK client gives up (in an exception group)
                        await _call_whoami(proxy.mcp_url, token, statuses)
                    assert statuses and set(statuses) == {401}, statuses
            finally:
                stopped.set()
