"""The adapters carry out ResolveUpstream with the picked tenant's upstream
source (OIDC discovery against a real local IdP here): only the routes that
talk to the upstream, and the upstream token getter, ever resolve it; the
token endpoint, the guard and the metadata never do. A source that cannot
resolve gives the same 503s under ASGI and WSGI."""

from __future__ import annotations

import logging
from typing import Any, Iterator

import attrs
import httpx
import pytest
from local_idp import LocalIdP
from oauth_walk import bearer, drive, drive_async, register, tokens
from proxy_apps import asgi_app, source, tenant, wsgi_app

from mcp_oauth_proxy.adapters.site import Site
from mcp_oauth_proxy.core.effects import Flow
from mcp_oauth_proxy.core.tenant import Upstream
from mcp_oauth_proxy.storage.memory import MemoryStore
from mcp_oauth_proxy.upstream import providers

pytestmark = pytest.mark.anyio
ISSUER, RESOURCE = "http://acme.test", "http://acme.test/mcp"


@attrs.define
class Counting:
    """An upstream source that counts how often it is asked."""

    inner: providers.UpstreamSource
    asked: int = 0

    def resolve(self) -> Flow[Upstream]:
        self.asked += 1
        return (yield from self.inner.resolve())


@pytest.fixture
def counted(oidc_idp: LocalIdP) -> Iterator[tuple[Site, Counting]]:
    counting = Counting(source(oidc_idp))
    yield Site([(tenant("acme"), counting)], MemoryStore(), b"c" * 32), counting


async def test_only_the_routes_that_talk_to_the_upstream_resolve_it(
        counted: tuple[Site, Counting], oidc_idp: LocalIdP, anyio_backend: str) -> None:
    site, counting = counted
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi_app(site)), base_url=ISSUER) as c:
        for path in ("/.well-known/oauth-authorization-server", "/.well-known/oauth-protected-resource/mcp",
                     "/mcp", "/oauth/jwks"):
            await c.get(path)
        await drive_async(register(ISSUER), c)
        assert counting.asked == 0 and "/.well-known/openid-configuration" not in oidc_idp.requests
        client_id, tok = await drive_async(tokens(ISSUER, RESOURCE), c)
        assert counting.asked == 3  # authorize, consent, callback; discovered once
        assert oidc_idp.requests.count("/.well-known/openid-configuration") == 1
        refreshed = await c.post("/oauth/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                       "refresh_token": tok["refresh_token"]})
        assert refreshed.status_code == 200
        assert (await c.get("/mcp", headers={"authorization": "Bearer mcp_at_unknown"})).status_code == 401
        assert counting.asked == 3
        # The guarded app asks for the upstream token: the getter resolves it.
        assert (await c.get("/mcp", **bearer(refreshed.json()["access_token"]))).status_code == 200
        assert counting.asked == 4
        assert (await c.get("/oauth/userinfo", **bearer(refreshed.json()["access_token"]))).status_code == 200
        assert counting.asked == 5


def _not_ready_site() -> Site:
    return Site([(tenant("acme"), providers.NotReady("environment variable ACME_SECRET is not set"))],
                MemoryStore(), b"c" * 32)


def _check_not_ready(get: Any, post: Any) -> None:
    page = get("/oauth/authorize?client_id=x")
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    assert "ACME_SECRET" not in page.text
    info = get("/oauth/userinfo")
    assert info.status_code == 503 and info.headers["retry-after"] == "30"
    assert info.json()["error"] == "temporarily_unavailable" and "ACME_SECRET" not in info.text
    # Endpoints that never talk to the upstream are unaffected.
    assert post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": "x"}).status_code == 401  # no client
    assert get("/.well-known/oauth-authorization-server").status_code == 200


async def test_a_source_that_cannot_resolve_gives_503s_under_asgi(
        anyio_backend: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mcp_oauth_proxy")
    answers = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi_app(_not_ready_site())),
                                 base_url=ISSUER) as c:
        for method, path, kw in (("GET", "/oauth/authorize?client_id=x", {}), ("GET", "/oauth/userinfo", {}),
                                 ("POST", "/oauth/token", {"data": {"grant_type": "refresh_token",
                                                                    "refresh_token": "x"}}),
                                 ("GET", "/.well-known/oauth-authorization-server", {})):
            answers.append(((method, path), await c.request(method, path, **kw)))
    by = dict(answers)
    _check_not_ready(lambda path: by[("GET", path)], lambda path, data: by[("POST", path)])
    # The operator is told why, once per request that needed it.
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("tenant acme: environment variable ACME_SECRET is not set") == 2


def test_a_source_that_cannot_resolve_gives_503s_under_wsgi() -> None:
    with httpx.Client(transport=httpx.WSGITransport(app=wsgi_app(_not_ready_site())), base_url=ISSUER) as c:
        _check_not_ready(c.get, c.post)
        assert drive(register(ISSUER), c)["client_id"]
