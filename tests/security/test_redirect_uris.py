"""Redirect URIs that Python, a browser and a person read differently: a
backslash, user information, non-ASCII. Refused at registration and in
metadata documents alike; a record registered under older rules is never
redirected to; the consent page names the host alone, in ASCII, and says
"this computer" only for a literal loopback host."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from local_idp import LocalIdP
from proxy_apps import asgi_app, site

from support import DOC_URL, REDIRECT, DocHarness, Harness, document
from mcp_oauth_proxy.core.models import Client

pytestmark = pytest.mark.anyio
ISSUER = "http://acme.test"
TWO_READINGS = [
    "http://evil.com\\@127.0.0.1/cb",  # 127.0.0.1 to Python, evil.com to a browser
    "https://trusted.example@evil.example/cb",  # shown as trusted.example
    "https://\u0430\u0440\u0440\u04cf\u0435.com/cb",  # Cyrillic look-alike of apple.com
    "https://app.example.com/caf\u00e9",  # cannot go in a Location header
    "https://good.com%2eevil.com/cb",  # good.com.evil.com to a browser, shown as good.com%2eevil.com
]


def browser(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    return httpx.AsyncClient(transport=transport, base_url=ISSUER, follow_redirects=False)


@pytest.mark.parametrize("uri", TWO_READINGS)
async def test_registering_a_redirect_uri_read_two_ways_is_refused(uri: str, oidc_idp: LocalIdP,
                                                                   anyio_backend: str) -> None:
    async with browser(asgi_app(site(oidc_idp))) as c:
        r = await c.post("/oauth/register", json={
            "redirect_uris": [uri], "client_name": "x", "token_endpoint_auth_method": "none",
            "application_type": "native"})
        assert r.status_code == 400 and r.json()["error"] == "invalid_redirect_uri"


@pytest.mark.parametrize("uri", TWO_READINGS)
def test_a_metadata_document_naming_such_a_redirect_uri_is_refused(uri: str) -> None:
    h = DocHarness()
    h.serve(document(redirect_uris=[uri]))
    page = h.request("GET", h.authorize_url(DOC_URL, redirect_uri=uri))
    assert page.status == 400 and page.header("location") is None
    assert "redirect URI" in page.body.decode()


def _legacy_client(h: Harness, *uris: str) -> str:
    """A client saved before these rules, with ``uris``."""
    h.store.save_client(Client(tenant="acme", client_id="mcp_client_legacy", redirect_uris=uris,
                               token_endpoint_auth_method="none", grant_types=("authorization_code",),
                               response_types=("code",), application_type="native", created_at=h.now))
    return "mcp_client_legacy"


@pytest.mark.parametrize("uri", TWO_READINGS)
def test_a_legacy_client_is_never_sent_to_such_a_redirect_uri(uri: str) -> None:
    h = Harness()
    client_id = _legacy_client(h, uri, REDIRECT)
    page = h.request("GET", h.authorize_url(client_id, redirect_uri=uri))
    assert page.status == 400 and page.header("location") is None
    assert page.header("content-type").startswith("text/html")


@pytest.mark.parametrize("uri", TWO_READINGS)
def test_a_legacy_client_with_only_such_a_redirect_uri_is_not_sent_to_it_when_the_request_names_none(
        uri: str) -> None:
    h = Harness()
    client_id = _legacy_client(h, uri)
    # No PKCE either: the error would go to the redirect URI, were it used.
    page = h.request("GET", h.authorize_url(client_id, redirect_uri=None, code_challenge=None))
    assert page.status == 400 and page.header("location") is None
    assert page.header("content-type").startswith("text/html")


def test_the_consent_page_of_a_legacy_client_names_hosts_as_a_browser_reads_them() -> None:
    h = Harness()
    client_id = _legacy_client(h, "http://evil.com\\@127.0.0.1/cb", REDIRECT)
    html = h.request("GET", h.authorize_url(client_id)).body.decode()
    # Not all its redirects are loopback as written: no "this computer" reassurance.
    assert 'class="warn"' not in html and "only redirects" not in html.lower()
    assert '<span class="host">127.0.0.1</span>' in html  # the one this request goes to, host alone
