"""The same flows under both drivers: sync (WSGI) and async on asyncio and
trio (ASGI), from registration to a refused token after revocation."""

from __future__ import annotations

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest

from support import ISSUER, Harness
from mcp_oauth_proxy.core.effects import Effect, Fetch, run_async, run_sync
from mcp_oauth_proxy.core.errors import StorageUnavailable
from mcp_oauth_proxy.core.flows.guard import Principal
from mcp_oauth_proxy.core.http import Request
from mcp_oauth_proxy.core.router import handle
from mcp_oauth_proxy.runtime import async_performer


def walk(h: Harness) -> None:
    """register -> authorize -> consent -> upstream -> callback -> token ->
    guard -> refresh -> revoke -> guard refuses."""
    client = h.register()
    code = h.login(client["client_id"])["code"]
    tokens = h.redeem(client["client_id"], code).json()
    principal = h.guard(tokens["access_token"])
    assert isinstance(principal, Principal) and principal.user_id == "user-42"
    h.now += 120
    refreshed = h.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                         "client_id": client["client_id"]}).json()
    assert isinstance(h.guard(refreshed["access_token"]), Principal)
    revoked = h.request("POST", f"{ISSUER}/oauth/revoke",
                        form={"token": refreshed["refresh_token"], "client_id": client["client_id"]})
    assert revoked.status == 200
    assert h.guard(refreshed["access_token"]).status == 401
    assert h.guard(tokens["access_token"]).status == 401


def test_whole_flow_under_the_sync_driver():
    walk(Harness())


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("store_blocks", [True, False])
def test_whole_flow_under_the_async_driver(backend, store_blocks):
    async def main() -> None:
        h = Harness()

        async def fetch(request):
            await anyio.sleep(0)  # a real checkpoint, as a network call would have
            return h.idp(request)

        perform = async_performer(h.store, fetch, store_blocks=store_blocks)
        # The walk runs in a worker thread; each flow runs on the event loop.
        h.driver = lambda flow: anyio.from_thread.run(run_async, flow, perform)
        await anyio.to_thread.run_sync(walk, h)

    anyio.run(main, backend=backend)


def test_effect_failures_are_thrown_back_into_the_flow():
    """A store that is down: the flow sees StorageUnavailable and answers 503."""
    h = Harness()

    def broken(effect: Effect):
        raise StorageUnavailable("connection refused")

    request = Request("POST", "/oauth/token", headers=(("content-type", "application/x-www-form-urlencoded"),),
                      body=b"grant_type=authorization_code&code=x&client_id=c")
    response = run_sync(handle(request, h.ctx()), broken)
    assert response.status == 503 and response.json()["error"] == "temporarily_unavailable"
    assert b"connection refused" not in response.body


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_driver_throws_failures_back_too(backend):
    h = Harness()

    async def broken(effect: Effect):
        raise StorageUnavailable("down")

    request = Request("GET", "/oauth/authorize", query="client_id=x")
    response = anyio.run(run_async, handle(request, h.ctx()), broken, backend=backend)
    assert response.status == 503 and response.header("content-type").startswith("text/html")


def test_unknown_effects_are_refused_by_the_performers():
    from mcp_oauth_proxy.runtime import sync_performer

    perform = sync_performer(Harness().store, lambda r: None)
    with pytest.raises(TypeError):
        perform(Effect())


def test_userinfo_falls_back_to_login_claims_when_upstream_is_unreachable():
    h = Harness()
    _, tokens = h.tokens()
    h.now += 3600 - 10

    def perform(effect: Effect):
        if isinstance(effect, Fetch):
            from mcp_oauth_proxy.core.errors import FetchFailed

            raise FetchFailed("refused")
        return h.perform()(effect)

    request = Request("GET", "/oauth/userinfo", headers=(("authorization", f"Bearer {tokens['access_token']}"),))
    # userinfo falls back to the claims kept from login
    response = run_sync(handle(request, h.ctx()), perform)
    assert response.status == 200 and response.json()["sub"] == "user-42"
