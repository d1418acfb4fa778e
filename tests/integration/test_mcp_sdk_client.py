"""A real MCP client (the official ``mcp`` SDK's ``OAuthClientProvider``)
against a real MCP server process (``mcp_server.py``: the SDK's
``MCPServer`` behind our ``BearerGuard``, with our OAuth endpoints, on
Hypercorn; embedded side by side on asyncio, and as the backend of the
standalone server's app on trio), whose upstream is the real identity
provider process.

The client discovers (401 -> protected resource metadata -> authorization
server metadata), registers, and authorizes; the browser step is automated
in its ``redirect_handler`` (follow the redirects, submit our consent form
and the identity provider's login and consent forms) and the code handed to
its ``callback_handler``. It calls a tool that answers with the person our
guard let in, refreshes when the short-lived access token expires, and after
the grant is revoked is refused and sent back to authorization.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import anyio
import attrs
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from realidp_browser import Person, Walk, walk_async
from processes import free_port, stop_process, wait_until
from realidp import ADA, IdP

SERVER_SCRIPT = Path(__file__).with_name("mcp_server.py")
# Our access tokens live this long, so the client must refresh during the test.
ACCESS_TOKEN_TTL = 2
DEADLINE = 30.0


@attrs.define
class Served:
    base: str
    idp: IdP
    log: Path

    @property
    def mcp_url(self) -> str:
        return f"{self.base}/mcp"


CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
database = "memory://"

[[tenants]]
slug = "local"
issuer = "{base}"
resource = "{base}/mcp"
scopes = ["mcp"]
required_scopes = ["mcp"]

[tenants.policy]
access_token_ttl = {ttl}

[tenants.upstream]
kind = "oidc"
issuer = "{idp_issuer}"
client_id = "{client_id}"
client_secret_env = "TEST_IDP_CLIENT_SECRET"
scopes = ["openid", "profile", "email", "offline_access"]
"""


@pytest.fixture(params=[("asyncio", "embedded"), ("trio", "server-app")], ids=["asyncio-embedded", "trio-server-app"])
def served(request: pytest.FixtureRequest, start_idp, tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    idp = start_idp([f"{base}/oauth/callback"])
    config = tmp_path / "mcp-oauth-proxy.toml"
    config.write_text(CONFIG.format(port=port, base=base, ttl=ACCESS_TOKEN_TTL, idp_issuer=idp.issuer,
                                    client_id=idp.client_id))
    log = tmp_path / "mcp-server.log"
    cmd = [sys.executable, str(SERVER_SCRIPT), str(config), idp.userinfo_endpoint]
    loop, composition = request.param
    if loop == "trio":
        cmd.append("--trio")
    if composition == "server-app":
        cmd.append("--server-app")
    env = {**os.environ, "TEST_IDP_CLIENT_SECRET": idp.client_secret}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                cwd=SERVER_SCRIPT.parent, env=env)
    try:
        wait_until(lambda: httpx.get(f"{base}/.well-known/oauth-protected-resource/mcp", timeout=2,
                                     trust_env=False).status_code == 200,
                   DEADLINE, "the MCP server", proc, log)
        yield Served(base, idp, log)
    finally:
        stop_process(proc)
        idp.stop()


@attrs.define
class MemoryStorage:
    """The SDK's TokenStorage, remembering every token set it was given."""

    tokens: list[OAuthToken] = attrs.Factory(list)
    client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens[-1] if self.tokens else None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens.append(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class ReauthorizationRefused(Exception):
    """The test's person does not log in a second time."""


@attrs.define
class PersonAtBrowser:
    """The SDK's redirect and callback handlers: a person who completes the
    login once, and refuses once ``refuse`` is set."""

    browser: httpx.AsyncClient
    redirect_uri: str
    person: Person
    refuse: bool = False
    asked: list[str] = attrs.Factory(list)
    walks: list[Walk] = attrs.Factory(list)
    _params: dict[str, str] | None = None

    async def redirect_handler(self, authorization_url: str) -> None:
        self.asked.append(authorization_url)
        if self.refuse:
            raise ReauthorizationRefused(authorization_url)
        walk = Walk()
        self.walks.append(walk)
        self._params = await walk_async(self.browser, authorization_url, self.redirect_uri, self.person, walk)

    async def callback_handler(self) -> AuthorizationCodeResult:
        params, self._params = self._params, None
        assert params is not None and "code" in params, params
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))


async def _whoami(client: Client) -> dict[str, Any]:
    result = await client.call_tool("whoami", {})
    assert not result.is_error, result
    return json.loads(result.content[0].text)


def test_mcp_sdk_client_discovers_registers_authorizes_refreshes_and_is_refused_after_revocation(
        served: Served) -> None:
    anyio.run(_scenario, served)


async def _scenario(served: Served) -> None:
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    storage = MemoryStorage()
    sent: list[tuple[str, str, int]] = []

    async def record(response: httpx2.Response) -> None:
        sent.append((response.request.method, str(response.request.url), response.status_code))

    async with httpx.AsyncClient(trust_env=False, timeout=20) as browser:
        person = PersonAtBrowser(browser, redirect_uri, Person(ADA["username"], ADA["password"]))
        provider = OAuthClientProvider(
            server_url=served.mcp_url,
            client_metadata=OAuthClientMetadata(
                client_name="mcp SDK integration test", redirect_uris=[redirect_uri],
                grant_types=["authorization_code", "refresh_token"], response_types=["code"],
                token_endpoint_auth_method="none", scope="mcp"),
            storage=storage,
            redirect_handler=person.redirect_handler,
            callback_handler=person.callback_handler,
        )
        async with httpx2.AsyncClient(auth=provider, timeout=20, event_hooks={"response": [record]}) as http:
            with anyio.fail_after(DEADLINE):
                try:
                    async with Client(streamable_http_client(served.mcp_url, http_client=http)) as client:
                        await _session(client, provider, served, storage, person, sent, browser)
                    raise AssertionError("the tool was called after the grant was revoked")
                except BaseException as exc:  # the SDK's task group raises it inside a group
                    if not _contains(exc, ReauthorizationRefused):
                        raise
    assert len(person.asked) == 2, person.asked


async def _session(client: Client, provider: OAuthClientProvider, served: Served, storage: MemoryStorage, person: PersonAtBrowser,
                   sent: list[tuple[str, str, int]], browser: httpx.AsyncClient) -> None:
    first = await _whoami(client)
    assert first["user_id"] == ADA["sub"]
    assert first["email"] == ADA["email"]
    assert first["scopes"] == ["mcp"]
    assert storage.client is not None and first["client_id"] == storage.client.client_id
    assert len(person.asked) == 1 and len(storage.tokens) == 1
    # It found us the MCP way: a 401, then the metadata documents.
    urls = [u for _, u, _ in sent]
    assert (sent[0][0], sent[0][2]) == ("POST", 401)
    assert f"{served.base}/.well-known/oauth-protected-resource/mcp" in urls
    assert any(u.startswith(f"{served.base}/.well-known/oauth-authorization-server") for u in urls)
    assert f"{served.base}/oauth/register" in urls
    # The person saw our consent page, then the IdP's login and consent.
    pages = person.walks[0].pages
    assert len(pages) == 3 and 'name="decision"' in pages[0] and 'type="password"' in pages[1]

    # Our access token expires; the client refreshes it (no new login).
    # Wait until the client itself holds the token expired: its clock starts
    # when it received the token, so by then the server refuses it too (a call
    # in between would get a 401 and start a new authorization, by design).
    with anyio.fail_after(ACCESS_TOKEN_TTL + 10):
        while provider.context.is_token_valid():
            await anyio.sleep(0.05)
    # The server keeps a token good through its last whole second, so it
    # refuses it at most a second after the client gave up on it.
    with anyio.fail_after(3):
        while True:
            expired = await browser.get(served.mcp_url,
                                        headers={"authorization": f"Bearer {storage.tokens[0].access_token}"})
            if expired.status_code == 401:
                break
            await anyio.sleep(0.05)
    assert "expired" in expired.headers["www-authenticate"]
    again = await _whoami(client)
    assert again["user_id"] == ADA["sub"]
    assert len(storage.tokens) == 2 and len(person.asked) == 1
    before, after = storage.tokens[0], storage.tokens[-1]
    assert after.access_token != before.access_token
    assert after.refresh_token and after.refresh_token != before.refresh_token
    assert any(m == "POST" and u == f"{served.base}/oauth/token" and s == 200 for m, u, s in sent[-4:])

    # The grant is revoked: the token is refused, and the client is sent
    # back to authorization (which the person declines this time).
    revoked = await browser.post(f"{served.base}/oauth/revoke", data={
        "token": after.refresh_token, "client_id": storage.client.client_id})
    assert revoked.status_code == 200
    refused = await browser.post(served.mcp_url, content=b"{}", headers={
        "authorization": f"Bearer {after.access_token}", "content-type": "application/json",
        "accept": "application/json, text/event-stream"})
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    person.refuse = True
    await _whoami(client)


def _contains(exc: BaseException, kind: type[BaseException]) -> bool:
    if isinstance(exc, kind):
        return True
    return any(_contains(e, kind) for e in getattr(exc, "exceptions", ()))
