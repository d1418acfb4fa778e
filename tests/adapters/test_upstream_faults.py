"""An upstream that refuses connections, is slow, fails or answers garbage:
the client gets a well-formed error without upstream detail, the app keeps
serving, nothing stored is lost, and a retry after recovery succeeds."""

from __future__ import annotations

from typing import Any, Iterator

import httpx
import pytest
from local_idp import LocalIdP
from oauth_walk import REDIRECT, at_upstream, bearer, drive_async, params, register, to_upstream, tokens
from proxy_apps import asgi_app, site
from support import ServerClock

from mcp_oauth_proxy.upstream import providers

pytestmark = pytest.mark.anyio
ISSUER, RESOURCE = "http://acme.test", "http://acme.test/mcp"
FAULTS = ["refused", "timeout", "500", "garbage"]


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER, follow_redirects=False)


class Faults:
    def __init__(self, idp: LocalIdP) -> None:
        self.idp = idp

    def start(self, fault: str) -> None:
        if fault == "refused":
            self.idp.stop()
        else:
            self.idp.fault = "slow" if fault == "timeout" else fault

    def end(self) -> None:
        if self.idp.fault is None:
            self.idp.start()  # on the same port
        self.idp.fault = None


@pytest.fixture
def faults(oidc_idp: LocalIdP) -> Iterator[Faults]:
    oidc_idp.slow_seconds = 1.0
    yield Faults(oidc_idp)


def assert_no_upstream_detail(text: str, idp: LocalIdP) -> None:
    for detail in ("hunter2", "not json", "Errno", "refused", "timed out", idp.url, "HTTP 500"):
        assert detail not in text


@pytest.mark.parametrize("fault", FAULTS)
async def test_callback_fault_redirects_with_temporarily_unavailable(
        oidc_idp: LocalIdP, faults: Faults, fault: str, anyio_backend: str) -> None:
    app = asgi_app(site(oidc_idp), timeout=0.3)
    async with client(app) as c:
        registered = await drive_async(register(ISSUER), c)
        upstream_url = await drive_async(to_upstream(ISSUER, RESOURCE, registered["client_id"]), c)
        callback = await drive_async(at_upstream(upstream_url), c)
        faults.start(fault)
        back = await c.get(callback)
        assert back.status_code == 302
        location = back.headers["location"]
        assert location.startswith(REDIRECT)
        got = params(location)
        assert got["error"] == "temporarily_unavailable" and got["iss"] == ISSUER and got["state"] == "st-1"
        assert_no_upstream_detail(location + back.text, oidc_idp)
        # Still serving.
        assert (await c.get("/.well-known/oauth-authorization-server")).status_code == 200
        faults.end()
        _, tok = await drive_async(tokens(ISSUER, RESOURCE), c)
        assert (await c.get("/mcp", **bearer(tok["access_token"]))).status_code == 200


@pytest.mark.parametrize("fault", FAULTS)
async def test_discovery_fault_gives_503_until_the_upstream_is_up(
        oidc_idp: LocalIdP, faults: Faults, fault: str, anyio_backend: str) -> None:
    faults.start(fault)
    now = [0.0]
    app = asgi_app(site(oidc_idp, clock=lambda: now[0]), timeout=0.3)
    async with client(app) as c:
        registered = await drive_async(register(ISSUER), c)  # needs no upstream
        page = await c.get("/oauth/authorize", params={"client_id": registered["client_id"]})
        assert page.status_code == 503 and "text/html" in page.headers["content-type"]
        assert_no_upstream_detail(page.text, oidc_idp)
        faults.end()
        # Discovery is tried again only after a wait: meanwhile 503 at once.
        asked = oidc_idp.requests.count("/.well-known/openid-configuration")
        again = await c.get("/oauth/authorize", params={"client_id": registered["client_id"]})
        assert again.status_code == 503
        assert oidc_idp.requests.count("/.well-known/openid-configuration") == asked
        now[0] += providers.RETRY_FIRST
        _, tok = await drive_async(tokens(ISSUER, RESOURCE), c)
        assert tok["access_token"].startswith("mcp_at_")


@pytest.mark.parametrize("fault", FAULTS)
async def test_upstream_refresh_fault_is_json_and_keeps_the_grant(
        oidc_idp: LocalIdP, faults: Faults, fault: str, server_clock: ServerClock, anyio_backend: str) -> None:
    oidc_idp.expires_in = 30
    app = asgi_app(site(oidc_idp), timeout=0.3)
    async with client(app) as c:
        _, tok = await drive_async(tokens(ISSUER, RESOURCE), c)
        server_clock.advance(15)  # half its life gone: the getter refreshes the upstream token
        faults.start(fault)
        r = await c.get("/mcp", **bearer(tok["access_token"]))
        assert r.status_code == 502 and r.json() == {"error": "temporarily_unavailable"}
        faults.end()
        r = await c.get("/mcp", **bearer(tok["access_token"]))
        assert r.status_code == 200 and r.json()["upstream_token"].startswith("idp-at-")
