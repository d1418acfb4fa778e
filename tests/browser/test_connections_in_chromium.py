"""The connections page in a real Chromium, with JavaScript off, against a
real ``serve`` process: an MCP client gets its tokens through a person's
login; the person opens the connections page, signs in at the identity
provider (the redirects followed by the browser, its cookies crossing
sites as SameSite=Lax lets them), sees the client, its injected name as
text, and disconnects it; the client's next call with its access token is
refused."""

from __future__ import annotations

import struct
from pathlib import Path

import httpx
from login_world import VERIFIER, World

INJECTED = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"
PHONE = {"width": 390, "height": 844}


def _tokens(world: World, code: str) -> dict[str, str]:
    r = httpx.post(f"{world.base}/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": world.redirect_uri,
        "code_verifier": VERIFIER, "client_id": world.client_id})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_person_disconnects_a_client_and_its_token_stops_working(world: World, chromium: object,
                                                                   tmp_path: Path) -> None:
    name = f"Tools {INJECTED}"
    world.client_id = world.register(name)
    context = chromium.new_context(java_script_enabled=False, viewport=PHONE)  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto(world.authorize_url())
    connections = page.get_by_role("link", name="your connections").get_attribute("href")
    assert connections == f"{world.base}/oauth/connections"  # the consent page's link
    page.click("button[value=approve]")
    access_token = _tokens(world, world.code_at_client(page))["access_token"]

    def userinfo() -> int:
        return httpx.get(f"{world.base}/oauth/userinfo", headers={"authorization": f"Bearer {access_token}"}).status_code

    def mcp() -> int:
        return httpx.post(f"{world.base}/mcp", headers={"authorization": f"Bearer {access_token}"}).status_code

    assert userinfo() == 200 and mcp() != 401  # past the guard (no backend here: 404)

    # The person opens the page: to the identity provider and back.
    page.goto(connections)
    assert page.url == connections
    assert page.title() == "Your connections"
    item = page.locator("li.connection")
    assert item.count() == 1
    assert item.locator("h2").inner_text() == name  # text, not markup
    assert page.locator("img, script, iframe").count() == 0
    assert item.locator("dd").first.inner_text() == "127.0.0.1"
    # Readable on a phone: the whole page is as wide as the screen, long names wrapped.
    screenshot = page.screenshot(path=str(tmp_path / "connections.png"), full_page=True)
    assert struct.unpack(">I", screenshot[16:20])[0] == PHONE["width"]  # the PNG's IHDR width

    page.get_by_role("button", name=f"Disconnect {name}").click()
    page.wait_for_url(f"{world.base}/oauth/connections?disconnected=1")
    assert "You have not connected any application." in page.inner_text("body")
    assert userinfo() == 401 and mcp() == 401

    page.get_by_role("button", name="Sign out").click()
    assert page.locator("h1").inner_text() == "Signed out"
    context.close()
