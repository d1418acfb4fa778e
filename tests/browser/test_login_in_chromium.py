"""The whole browser side of a login in a real Chromium, against a real
``serve`` process: the consent page clicked, the identity provider's
redirects followed, the callback reached with the browser's own cookies
(SameSite=Lax, across sites). And the attack the browser binding stops:
a login link that one person's consent produced, opened in another
person's browser, ends on our refusal page, never at the client."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import attrs
import httpx
import pytest
from chromium import ARGS, require_chromium
from local_idp import CLIENT_ID, CLIENT_SECRET, LocalIdP
from processes import free_port, stop_process, wait_until

from mcp_oauth_proxy.core.pkce import s256

VERIFIER = "b" * 50
CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
database = "memory://"

[[tenants]]
slug = "acme"
issuer = "{base}"
resource = "{base}/mcp"
scopes = ["mcp"]

[tenants.upstream]
kind = "github"
client_id = "{client_id}"
client_secret_env = "TEST_IDP_CLIENT_SECRET"
authorization_endpoint = "{idp}/authorize"
token_endpoint = "{idp}/token"
userinfo_endpoint = "{idp}/user"
"""


@attrs.define
class World:
    base: str
    idp: LocalIdP
    # Where the MCP client waits for its code, and what reached it.
    redirect_uri: str
    arrived: list[str]
    client_id: str = ""

    def authorize_url(self) -> str:
        return f"{self.base}/oauth/authorize?" + urlencode({
            "response_type": "code", "client_id": self.client_id, "redirect_uri": self.redirect_uri, "state": "st",
            "code_challenge": s256(VERIFIER), "code_challenge_method": "S256", "resource": f"{self.base}/mcp"})


def _client_redirect_server(arrived: list[str]) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/cb"):
                arrived.append(self.path)
            body = b"<title>client</title>signed in"
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    require_chromium()
    idp = LocalIdP("github")
    arrived: list[str] = []
    client_site = _client_redirect_server(arrived)
    port = free_port()
    # localhost for us, 127.0.0.1 for the identity provider: the redirect
    # back to our callback crosses sites, as it does in real life.
    base = f"http://localhost:{port}"
    config = tmp_path / "proxy.toml"
    config.write_text(CONFIG.format(port=port, base=base, client_id=CLIENT_ID, idp=idp.url))
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mcp_oauth_proxy.cli", "serve", "--config", str(config)],
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=tmp_path,
                                env={**os.environ, "TEST_IDP_CLIENT_SECRET": CLIENT_SECRET})
    try:
        wait_until(lambda: httpx.get(f"{base}/.well-known/oauth-authorization-server").status_code == 200,
                   30, "serve", proc, log)
        w = World(base, idp, f"http://127.0.0.1:{client_site.server_address[1]}/cb", arrived)
        r = httpx.post(f"{base}/oauth/register", json={
            "redirect_uris": [w.redirect_uri], "client_name": "Browser Test Client",
            "token_endpoint_auth_method": "none", "grant_types": ["authorization_code"]})
        assert r.status_code == 201, r.text
        w.client_id = r.json()["client_id"]
        yield w
    finally:
        stop_process(proc)
        client_site.shutdown()
        client_site.server_close()
        idp.stop()


@pytest.fixture
def chromium() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=require_chromium(), args=ARGS)
        yield browser
        browser.close()


def _code_at_client(world: World, page: object) -> str:
    page.wait_for_url(f"{world.redirect_uri}?**")  # type: ignore[attr-defined]
    query = parse_qs(urlsplit(page.url).query)  # type: ignore[attr-defined]
    assert query["state"] == ["st"] and query["iss"] == [world.base]
    return query["code"][0]


def _upstream_urls_of(context: object, world: World) -> list[str]:
    """Hold every redirect of ours to the identity provider, keeping its URL
    (Playwright cannot intercept a redirect's target, so our answers are
    fetched in the browser's name, its cookies kept, and replaced)."""
    held: list[str] = []

    def hold(route: object) -> None:
        answer = route.fetch(max_redirects=0)  # type: ignore[attr-defined]
        location = answer.headers.get("location", "")
        if not location.startswith(world.idp.url):
            route.fulfill(response=answer)  # type: ignore[attr-defined]
            return
        held.append(location)
        route.fulfill(status=200, content_type="text/html", body="<title>held</title>")  # type: ignore[attr-defined]

    context.route(f"{world.base}/oauth/**", hold)  # type: ignore[attr-defined]
    return held


def test_a_person_approves_signs_in_and_the_client_gets_its_code(world: World, chromium: object) -> None:
    context = chromium.new_context()  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto(world.authorize_url())
    assert "Browser Test Client" in page.content()
    page.click("button[value=approve]")
    assert _code_at_client(world, page).startswith("mcp_code_")
    # Approved before: the next login goes straight through, still bound to this browser.
    page.goto(world.authorize_url())
    assert _code_at_client(world, page).startswith("mcp_code_")
    assert len(world.arrived) == 2


def test_two_tabs_of_one_browser_both_finish(world: World, chromium: object) -> None:
    context = chromium.new_context()  # type: ignore[attr-defined]
    held = _upstream_urls_of(context, world)
    tabs = [context.new_page(), context.new_page()]
    for tab in tabs:
        tab.goto(world.authorize_url())
    for tab in tabs:  # both consent pages are up before either is answered
        tab.click("button[value=approve]")
        tab.wait_for_load_state()
    context.unroute(f"{world.base}/oauth/**")
    assert len(held) == 2
    for tab, upstream_url in zip(tabs, held):
        tab.goto(upstream_url)
        assert _code_at_client(world, tab).startswith("mcp_code_")


def test_a_login_link_opened_in_another_browser_ends_on_our_refusal_page(world: World, chromium: object) -> None:
    attacker = chromium.new_context()  # type: ignore[attr-defined]
    held = _upstream_urls_of(attacker, world)
    page = attacker.new_page()
    page.goto(world.authorize_url())
    page.click("button[value=approve]")
    page.wait_for_load_state()
    assert len(held) == 1
    # The victim's browser opens the link; the identity provider signs them in.
    victim = chromium.new_context()  # type: ignore[attr-defined]
    lured = victim.new_page()
    answer = lured.goto(held[0])
    assert answer is not None and answer.status == 403
    assert lured.url.startswith(f"{world.base}/oauth/callback?")
    assert "another browser" in lured.inner_text("body")
    assert world.arrived == []
