"""Many requests of one grant at once while its short-lived upstream token is
refreshed, through the real ASGI and WSGI guards (the upstream a LocalIdP over
real HTTP, counting the tokens it issues): every request gets the one new
token, and the upstream is asked once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import httpx
import pytest
from local_idp import LocalIdP
from oauth_walk import bearer, drive, drive_async, tokens
from proxy_apps import asgi_app, site, wsgi_app
from support import ServerClock


ISSUER, RESOURCE = "http://acme.test", "http://acme.test/mcp"
AT_ONCE = 8
LIFETIME = 30  # half the 60 s refresh skew
# Due for a refresh (past half its life), and expired.
AGES = pytest.mark.parametrize("age", [LIFETIME // 2, LIFETIME + 10], ids=["due", "expired"])


def _slow_refresh(idp: LocalIdP) -> None:
    # Every request arrives while the refresh is under way.
    idp.fault, idp.slow_seconds = "slow", 0.3


def _one_new_token(answers: list[httpx.Response], idp: LocalIdP, issued_before: int) -> None:
    assert [a.status_code for a in answers] == [200] * AT_ONCE, [a.text for a in answers]
    assert {a.json()["upstream_token"] for a in answers} == {f"idp-at-{issued_before + 1}"}
    assert idp.issued == issued_before + 1  # one upstream refresh


@AGES
@pytest.mark.anyio
async def test_requests_at_once_on_a_short_lived_token_share_one_refresh_asgi(
        oidc_idp: LocalIdP, server_clock: ServerClock, anyio_backend: str, age: int) -> None:
    oidc_idp.expires_in = LIFETIME
    app = asgi_app(site(oidc_idp))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as c:
        _, tok = await drive_async(tokens(ISSUER, RESOURCE), c)
        issued = oidc_idp.issued
        server_clock.advance(age)
        _slow_refresh(oidc_idp)
        answers: list[httpx.Response] = []

        async def one() -> None:
            answers.append(await c.get("/mcp", **bearer(tok["access_token"])))

        async with anyio.create_task_group() as tasks:
            for _ in range(AT_ONCE):
                tasks.start_soon(one)
    _one_new_token(answers, oidc_idp, issued)


@AGES
def test_requests_at_once_on_a_short_lived_token_share_one_refresh_wsgi(
        oidc_idp: LocalIdP, server_clock: ServerClock, age: int) -> None:
    oidc_idp.expires_in = LIFETIME
    app = wsgi_app(site(oidc_idp))

    def client() -> httpx.Client:
        return httpx.Client(transport=httpx.WSGITransport(app=app), base_url=ISSUER)

    with client() as c:
        _, tok = drive(tokens(ISSUER, RESOURCE), c)
    issued = oidc_idp.issued
    server_clock.advance(age)
    _slow_refresh(oidc_idp)

    def one(_: int) -> httpx.Response:
        with client() as c:
            return c.get("/mcp", **bearer(tok["access_token"]))

    with ThreadPoolExecutor(AT_ONCE) as pool:
        answers = list(pool.map(one, range(AT_ONCE)))
    _one_new_token(answers, oidc_idp, issued)


@pytest.mark.anyio
async def test_a_refresh_whose_request_is_cancelled_is_finished_and_stored_for_the_others(
        oidc_idp: LocalIdP, server_clock: ServerClock, anyio_backend: str) -> None:
    oidc_idp.expires_in = LIFETIME
    app = asgi_app(site(oidc_idp))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as c:
        _, tok = await drive_async(tokens(ISSUER, RESOURCE), c)
        issued = oidc_idp.issued
        server_clock.advance(LIFETIME + 10)
        oidc_idp.fault, oidc_idp.slow_seconds = "slow", 0.5
        # The first request takes the lease and asks the upstream, and its
        # client is gone before the answer comes. Were the refresh dropped,
        # an upstream that rotates refresh tokens would have spent the one
        # the grant holds.
        with anyio.move_on_after(0.2) as gone:
            await c.get("/mcp", **bearer(tok["access_token"]))
        assert gone.cancel_called  # the client left while the upstream was still answering
        answers: list[Any] = []

        async def one() -> None:
            answers.append(await c.get("/mcp", **bearer(tok["access_token"])))

        async with anyio.create_task_group() as tasks:
            for _ in range(AT_ONCE):
                tasks.start_soon(one)
    assert [a.status_code for a in answers] == [200] * AT_ONCE, [a.text for a in answers]
    # The cancelled request's refresh was finished and stored: the others use it.
    assert {a.json()["upstream_token"] for a in answers} == {f"idp-at-{issued + 1}"}
    assert oidc_idp.issued == issued + 1
