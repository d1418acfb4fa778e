"""The operators' console in a real headless Chromium, against a real
``serve`` with its admin listener: sign in with an admin token; create an
organization, two OAuth configurations and a server; switch the server to
the other configuration (the page says first how many grants that revokes,
and a token of the old one then gets 401 from the public listener); revoke
a grant (its token gets 401); delete a registered client. Every page is
saved as a PNG under the test's temporary folder for a reviewer to look at,
on a desktop and on a phone's width; an injected client name shows as text."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import attrs
import httpx
import pytest
from chromium import ARGS, require_chromium
from processes import free_port, stop_process, wait_until

INJECTION = "<img src=x onerror=\"document.title='pwned'\">Evil app"

CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
database = "sqlite:///{db}"
key_file = "{keys}"
"""


@attrs.define
class Deployment:
    base: str
    console: str
    api: str
    token: str
    database: str
    keys: Path
    shots: Path

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.api, headers={"authorization": f"Bearer {self.token}"}, trust_env=False,
                            timeout=10)

    def seed(self, tenant: str, grant_id: str, user: str, client_id: str) -> str:
        """An access token of a live grant, as a login would have left it."""
        from mcp_oauth_proxy.core.context import ACCESS_PREFIX
        from mcp_oauth_proxy.core.models import AccessToken, CodeGrant, Grant, UpstreamTokens
        from mcp_oauth_proxy.storage.keys import load_or_create_keyring
        from mcp_oauth_proxy.storage.open import open_store

        now = int(time.time())
        token = f"{ACCESS_PREFIX}{os.urandom(16).hex()}"
        resource = f"{self.base}/{tenant}/mcp"
        store = open_store(self.database, load_or_create_keyring(str(self.keys))[0])
        grant = Grant(tenant=tenant, grant_id=grant_id, client_id=client_id, user_id=user, scope=("mcp",),
                      resource=resource, code_hash=f"code-{grant_id}", claims={}, upstream=UpstreamTokens("up"),
                      created_at=now, expires_at=now + 86400)
        store.save_grant_and_code(grant, CodeGrant(
            tenant=tenant, code_hash=grant.code_hash, grant_id=grant_id, client_id=client_id, user_id=user,
            redirect_uri="http://127.0.0.1/cb", redirect_uri_given=True, code_challenge="c" * 43, scope=("mcp",),
            resource=resource, expires_at=now + 60))
        access = AccessToken(tenant=tenant, token_hash=hashlib.sha256(token.encode()).hexdigest(), grant_id=grant_id,
                             client_id=client_id, user_id=user, scope=("mcp",), resource=resource, issued_at=now,
                             expires_at=now + 3600)
        assert store.redeem_code(tenant=tenant, code_hash=grant.code_hash, now=now, access=access, refresh=None,
                                 keep_client=False).name == "ISSUED"
        store.engine.dispose()
        return token

    def status(self, tenant: str, token: str) -> int:
        return httpx.post(f"{self.base}/{tenant}/mcp", json={}, headers={"authorization": f"Bearer {token}"},
                          trust_env=False, timeout=10).status_code


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    port, admin = free_port(), free_port()
    config = tmp_path / "proxy.toml"
    database = f"sqlite:///{tmp_path / 'proxy.db'}"
    config.write_text(CONFIG.format(port=port, admin=admin, db=tmp_path / "proxy.db", keys=tmp_path / "keys"))
    made = subprocess.run([sys.executable, "-m", "mcp_oauth_proxy.cli", "admin", "create-token", "--label", "ops",
                           "--config", str(config), "--json"], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    import json

    token = json.loads(made.stdout)["token"]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mcp_oauth_proxy.cli", "serve", "--config", str(config)],
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=tmp_path)
    console = f"http://127.0.0.1:{admin}/admin"
    try:
        wait_until(lambda: httpx.get(f"{console}/sign-in", trust_env=False).status_code == 200, 30, "serve", proc, log)
        shots = tmp_path / "screenshots"
        shots.mkdir()
        yield Deployment(f"http://127.0.0.1:{port}", console, f"{console}/api/v1", token, database,
                         tmp_path / "keys", shots)
    finally:
        stop_process(proc)


@pytest.fixture
def chromium() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=require_chromium(), args=ARGS)
        yield browser
        browser.close()


def _shoot(page: object, d: Deployment, name: str) -> None:
    page.screenshot(path=str(d.shots / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def _submit(page: object) -> None:
    page.click("main form button[type=submit] >> nth=0")  # type: ignore[attr-defined]


def test_an_operator_runs_the_console(deployment: Deployment, chromium: object) -> None:
    d = deployment
    context = chromium.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    answer = page.goto(f"{d.console}/")
    assert page.url.endswith("/admin/sign-in")
    headers = answer.all_headers() if answer else {}
    assert "default-src 'none'" in headers.get("content-security-policy", "")
    _shoot(page, d, "01-sign-in")
    page.get_by_label("Admin token").fill("mcp_admin_wrong")
    page.keyboard.press("Enter")  # the keyboard alone signs in
    page.wait_for_selector("text=not a valid admin token")
    page.get_by_label("Admin token").fill(d.token)
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin/servers")
    cookie = next(c for c in context.cookies() if c["name"] == "mcp_admin_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # An organization, two OAuth configurations.
    page.goto(f"{d.console}/organizations")
    page.get_by_label("Name", exact=True).fill("acme")
    page.get_by_label("Display name").fill("Acme Corp")
    _submit(page)
    page.wait_for_url("**/admin/organizations?notice=created")
    assert "Created." in page.content()
    _shoot(page, d, "02-organizations")
    for name, client_id in (("github-main", "Iv1.main"), ("github-next", "Iv1.next")):
        page.goto(f"{d.console}/oauth-configs/+new")
        page.get_by_label("Organization").select_option("acme")
        page.get_by_label("Name", exact=True).fill(name)
        page.get_by_label("Kind").select_option("github")
        page.get_by_label("Client ID").fill(client_id)
        page.get_by_label("Client secret").fill("s3cret-" + name)
        if name == "github-main":  # refused first, said next to its field; the secret not shown again
            page.get_by_label("Name", exact=True).fill("Not A Slug")
            _submit(page)
            page.wait_for_selector("#d-name strong")
            assert "must be 1-63 characters" in page.locator("#d-name").inner_text()
            assert page.get_by_label("Client secret").input_value() == ""
            page.get_by_label("Name", exact=True).fill(name)
            page.get_by_label("Client secret").fill("s3cret-" + name)
        _submit(page)
        page.wait_for_url("**/admin/oauth-configs?notice=created")
    _shoot(page, d, "03-oauth-configs")
    assert "s3cret" not in page.content()
    with d.admin() as api:
        assert api.get("/oauth-configs/acme/github-main").json()["client_secret"] == "set"

    # A server.
    page.goto(f"{d.console}/servers/+new")
    page.get_by_label("Slug").fill("tools")
    page.get_by_label("Organization").select_option("acme")
    page.get_by_label("OAuth configuration").select_option("github-main")
    page.get_by_label("Issuer").fill(f"{d.base}/tools")
    page.get_by_label("Resource", exact=True).fill(f"{d.base}/tools/mcp")
    _shoot(page, d, "04-server-new")
    _submit(page)
    page.wait_for_url("**/admin/servers?notice=created")
    _shoot(page, d, "05-servers")
    with d.admin() as api:
        assert api.get("/servers/tools").json()["oauth_config"] == "github-main"
    deadline = time.monotonic() + 5
    while httpx.get(f"{d.base}/.well-known/oauth-authorization-server/tools", trust_env=False).status_code != 200:
        assert time.monotonic() < deadline, "the new server is not served"
        time.sleep(0.1)

    # People's grants: one to switch away, one to revoke.
    old = d.seed("tools", "g-ada", "ada", "c-evil")
    assert d.status("tools", old) != 401
    from mcp_oauth_proxy.core.models import Client
    from mcp_oauth_proxy.storage.keys import load_or_create_keyring
    from mcp_oauth_proxy.storage.open import open_store

    store = open_store(d.database, load_or_create_keyring(str(d.keys))[0])
    store.save_client(Client(tenant="tools", client_id="c-evil", redirect_uris=("https://evil.example/cb",),
                             token_endpoint_auth_method="none", grant_types=("authorization_code",),
                             response_types=("code",), application_type="web", created_at=int(time.time()),
                             client_name=INJECTION))
    store.engine.dispose()

    page.goto(f"{d.console}/servers/tools/clients")
    assert page.title().endswith("mcp-oauth-proxy console")  # no injected handler ran
    assert INJECTION in page.locator("main table").inner_text() and page.locator("main table img").count() == 0
    _shoot(page, d, "06-clients")

    # A machine client, made here: its secret shown once, and it gets a token with it.
    page.click("text=New machine client")
    page.get_by_label("Name", exact=True).fill("Nightly report")
    page.get_by_label("Authentication").select_option("client_secret_basic")
    _submit(page)
    page.wait_for_selector("#client-secret")
    _shoot(page, d, "06b-machine-client")
    robot, secret = page.inner_text("#client-id"), page.inner_text("#client-secret")
    got = httpx.post(f"{d.base}/tools/oauth/token", data={"grant_type": "client_credentials"},
                     auth=(robot, secret), trust_env=False)
    assert got.status_code == 200 and got.json()["access_token"].startswith("mcp_at_"), got.text
    page.goto(f"{d.console}/servers/tools/clients")
    assert secret not in page.content()
    page.click(f"main table tr:has-text('{robot}') button:has-text('Delete')")
    page.wait_for_url("**notice=deleted**")

    page.goto(f"{d.console}/servers/tools")
    page.get_by_label("OAuth configuration").select_option("github-next")
    _submit(page)
    page.wait_for_selector("text=Switch and revoke")
    assert "revokes 1 live grant" in " ".join(page.locator("main").inner_text().split())
    _shoot(page, d, "07-confirm-switch")
    page.click("text=Switch and revoke 1 grant(s)")
    page.wait_for_url("**/admin/servers/tools?notice=saved")
    assert d.status("tools", old) == 401
    with d.admin() as api:
        assert api.get("/servers/tools").json()["oauth_config"] == "github-next"

    fresh = d.seed("tools", "g-bob", "bob", "c-evil")
    assert d.status("tools", fresh) != 401
    page.goto(f"{d.console}/grants")
    page.get_by_label("Person (user id)").fill("bob")
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin/grants?**")
    _shoot(page, d, "08-grants")
    page.click("main table button:has-text('Revoke')")
    page.wait_for_url("**notice=revoked**")
    assert d.status("tools", fresh) == 401

    page.goto(f"{d.console}/servers/tools/clients")
    page.click("main table button:has-text('Delete')")
    page.wait_for_url("**notice=deleted**")
    with d.admin() as api:
        assert api.get("/servers/tools/clients").json()["items"] == []

    page.goto(f"{d.console}/audit")
    assert "admin.server_updated" in page.content() and "admin.grant_revoked" in page.content()
    _shoot(page, d, "09-audit")

    # Readable on a phone: nothing wider than the screen but the tables, which scroll.
    phone = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)  # type: ignore[attr-defined]
    phone.add_cookies(context.cookies())
    small = phone.new_page()
    for path in ("servers", "oauth-configs/acme/github-next", "grants"):
        small.goto(f"{d.console}/{path}")
        assert small.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), path
    _shoot(small, d, "10-phone-config")

    page.click("header button:has-text('Sign out')")
    page.wait_for_url("**/admin/sign-in?notice=signed-out")
    page.goto(f"{d.console}/servers")
    assert page.url.endswith("/admin/sign-in")
    # The phone's copy of the cookie was signed out with it.
    small.goto(f"{d.console}/servers")
    assert small.url.endswith("/admin/sign-in")
    shots = sorted(p.name for p in d.shots.iterdir())
    assert len(shots) == 11, shots
    if os.environ.get("MCP_OAUTH_PROXY_SCREENSHOTS"):  # for the README: docs/console.png
        Path(os.environ["MCP_OAUTH_PROXY_SCREENSHOTS"]).write_bytes((d.shots / "05-servers.png").read_bytes())
