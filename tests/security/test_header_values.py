"""Response header values the adapters cannot send as they are: a
Location built from a redirect URI with non-ASCII characters (registered
before registration refused them) is percent-encoded (RFC 3986 §2.1, the
UTF-8 bytes), never a 500 from the ASGI or WSGI adapter; a line break in a
header value is never sent (no response splitting)."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx
import pytest
from forward_servers import upstream  # noqa: F401 (fixture)
from local_idp import LocalIdP
from proxy_apps import asgi_app, site, wsgi_app

from mcp_oauth_proxy.adapters.asgi import send_response
from mcp_oauth_proxy.adapters.wsgi import _send
from mcp_oauth_proxy.core.http import Response
from mcp_oauth_proxy.core.models import Client

IDN_REDIRECT = "https://аррӏе.com/cb"  # Cyrillic look-alikes of "apple"
ENCODED = "https://%D0%B0%D1%80%D1%80%D3%8F%D0%B5.com/cb"


def _site_with_idn_client(idp: LocalIdP) -> Any:
    the_site = site(idp)
    the_site.store.save_client(Client(
        tenant="acme", client_id="idn-client", redirect_uris=(IDN_REDIRECT,), token_endpoint_auth_method="none",
        grant_types=("authorization_code",), response_types=("code",), application_type="web",
        created_at=int(time.time())))
    return the_site


# No PKCE: an error the authorize endpoint sends back to the redirect URI.
AUTHORIZE = "/oauth/authorize?" + urlencode({"response_type": "code", "client_id": "idn-client",
                                             "redirect_uri": IDN_REDIRECT, "state": "st"})


def _check_redirect(answer: httpx.Response) -> None:
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(ENCODED + "?") and "error=invalid_request" in location, location


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_a_non_ascii_redirect_uri_never_breaks_the_asgi_adapter(upstream: LocalIdP, loop: str) -> None:
    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=asgi_app(_site_with_idn_client(upstream)))
        async with httpx.AsyncClient(transport=transport, base_url="http://acme.test") as http:
            return await http.get(AUTHORIZE)

    _check_redirect(anyio.run(main, backend=loop))


def test_a_non_ascii_redirect_uri_never_breaks_the_wsgi_adapter(upstream: LocalIdP) -> None:
    transport = httpx.WSGITransport(app=wsgi_app(_site_with_idn_client(upstream)))
    with httpx.Client(transport=transport, base_url="http://acme.test") as http:
        _check_redirect(http.get(AUTHORIZE))


SPLIT = Response(302, (("location", "https://a.test/cb\r\nSet-Cookie: session=evil"), ("cache-control", "no-store")))


def _check_refused(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    for name, value in headers:
        assert not any(c < 0x20 for c in name + value), (name, value)
    assert status == 500 and json.loads(body)["error"] == "server_error"


def test_a_line_break_in_a_header_value_is_never_sent_by_the_asgi_adapter() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    anyio.run(send_response, send, SPLIT)
    _check_refused(sent[0]["status"], sent[0]["headers"], sent[1]["body"])


def test_a_line_break_in_a_header_value_is_never_sent_by_the_wsgi_adapter() -> None:
    started: list[Any] = []
    body = b"".join(_send(lambda status, headers: started.append((status, headers)), SPLIT))
    status, headers = started[0]
    _check_refused(int(status.split()[0]), [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers], body)
