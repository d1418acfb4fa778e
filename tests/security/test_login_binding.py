"""Login CSRF through the upstream callback: the ``state`` we send the
identity provider comes back through it, so it proves nothing about which
browser brings it back. Only the browser that consented may finish a login;
anyone lured to a login link another person started gets nothing (MCP
security best practices: the consent page is the confused-deputy defence)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from local_idp import LocalIdP
from oauth_walk import CHALLENGE, VERIFIER, at_upstream, drive_async, params
from proxy_apps import asgi_app, site

pytestmark = pytest.mark.anyio
ISSUER, RESOURCE = "http://acme.test", "http://acme.test/mcp"
ATTACKER_REDIRECT = "https://attacker.example/cb"


def browser(app: Any) -> httpx.AsyncClient:
    """A browser of its own: its own cookie jar."""
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://acme.test", follow_redirects=False)


async def _attacker_client(c: httpx.AsyncClient) -> str:
    r = await c.post("/oauth/register", json={
        "redirect_uris": [ATTACKER_REDIRECT], "client_name": "Totally Legit", "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"], "application_type": "web"})
    assert r.status_code == 201, r.text
    return r.json()["client_id"]


def _authorize(client_id: str, redirect_uri: str = ATTACKER_REDIRECT) -> str:
    return (f"{ISSUER}/oauth/authorize?response_type=code&client_id={client_id}&redirect_uri={redirect_uri}"
            f"&code_challenge={CHALLENGE}&code_challenge_method=S256&state=s&resource={RESOURCE}")


def _request_id(page: httpx.Response) -> str:
    assert page.status_code == 200
    return page.text.split('name="request_id" value="', 1)[1].split('"', 1)[0]


async def _approve(c: httpx.AsyncClient, request_id: str) -> str:
    answer = await c.post("/oauth/consent", data={"request_id": request_id, "decision": "approve"})
    assert answer.status_code == 303
    return answer.headers["location"]


async def _consented_upstream_url(c: httpx.AsyncClient, client_id: str) -> str:
    """The attacker approves their own client in their own browser and keeps
    the identity provider URL we send them to (it carries our state)."""
    return await _approve(c, _request_id(await c.get(_authorize(client_id))))


async def test_a_victim_lured_to_anothers_login_link_gets_a_page_and_the_attacker_no_code(
        oidc_idp: LocalIdP, anyio_backend: str) -> None:
    app = asgi_app(site(oidc_idp))
    async with browser(app) as attacker, browser(app) as victim:
        client_id = await _attacker_client(attacker)
        upstream_url = await _consented_upstream_url(attacker, client_id)
        # The victim opens the link; the identity provider signs them in
        # silently and sends their browser, with no cookie of ours, back to us.
        callback = await drive_async(at_upstream(upstream_url), victim)
        answer = await victim.get(callback)
        assert answer.status_code == 403
        assert answer.headers["content-type"].startswith("text/html")
        assert "location" not in answer.headers and "mcp_code_" not in answer.text
        assert "another browser" in answer.text
        # Nothing was issued, and the spent session cannot be finished by the
        # attacker's own browser either.
        assert not app.site.store._grants and not app.site.store._codes
        again = await attacker.get(callback)
        assert again.status_code == 400 and "location" not in again.headers
        assert not app.site.store._grants


async def test_a_victim_with_a_browser_cookie_of_their_own_is_refused_too(
        oidc_idp: LocalIdP, anyio_backend: str) -> None:
    app = asgi_app(site(oidc_idp))
    async with browser(app) as attacker, browser(app) as victim:
        client_id = await _attacker_client(attacker)
        # The victim has used this server before: a browser cookie of their own.
        await victim.get(_authorize(client_id))
        assert any(name.endswith("mcp_browser") for name in victim.cookies)
        upstream_url = await _consented_upstream_url(attacker, client_id)
        answer = await victim.get(await drive_async(at_upstream(upstream_url), victim))
        assert answer.status_code == 403 and not app.site.store._grants


async def test_the_person_who_consented_finishes_in_the_same_browser(oidc_idp: LocalIdP, anyio_backend: str) -> None:
    app = asgi_app(site(oidc_idp))
    async with browser(app) as person:
        client_id = await _attacker_client(person)
        upstream_url = await _consented_upstream_url(person, client_id)
        answer = await person.get(await drive_async(at_upstream(upstream_url), person))
        assert answer.status_code == 302
        assert answer.headers["location"].startswith(ATTACKER_REDIRECT + "?code=mcp_code_")


async def test_a_remembered_approval_binds_the_login_to_the_browser_that_passes_it_on(
        oidc_idp: LocalIdP, anyio_backend: str) -> None:
    app = asgi_app(site(oidc_idp))
    async with browser(app) as attacker, browser(app) as victim:
        client_id = await _attacker_client(attacker)
        await attacker.get(await drive_async(at_upstream(await _consented_upstream_url(attacker, client_id)), attacker))
        # Approved before: authorize now goes straight upstream, and binds
        # this login to the attacker's browser all the same.
        direct = await attacker.get(_authorize(client_id))
        assert direct.status_code == 302
        answer = await victim.get(await drive_async(at_upstream(direct.headers["location"]), victim))
        assert answer.status_code == 403 and "location" not in answer.headers
        # The attacker's own browser still finishes its own logins.
        own = await attacker.get(_authorize(client_id))
        finished = await attacker.get(await drive_async(at_upstream(own.headers["location"]), attacker))
        assert finished.status_code == 302 and "code=mcp_code_" in finished.headers["location"]


async def test_two_tabs_of_one_browser_both_finish(oidc_idp: LocalIdP, anyio_backend: str) -> None:
    app = asgi_app(site(oidc_idp))
    async with browser(app) as person:
        client_id = await _attacker_client(person)
        # Two tabs show the consent page before either is answered.
        pages = [_request_id(await person.get(_authorize(client_id))) for _ in range(2)]
        upstream_urls = [await _approve(person, request_id) for request_id in pages]
        for upstream_url in upstream_urls:
            answer = await person.get(await drive_async(at_upstream(upstream_url), person))
            assert answer.status_code == 302, answer.text
            assert params(answer.headers["location"])["code"].startswith("mcp_code_")
        token = await person.post("/oauth/token", data={
            "grant_type": "authorization_code", "code": params(answer.headers["location"])["code"],
            "redirect_uri": ATTACKER_REDIRECT, "code_verifier": VERIFIER, "client_id": client_id})
        assert token.status_code == 200, token.text
