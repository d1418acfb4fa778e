"""Response header values the adapters cannot send as they are: a
Location with non-ASCII characters is percent-encoded (RFC 3986 §2.1, the
UTF-8 bytes), never a 500 from the ASGI or WSGI adapter; a line break in a
header value is never sent (no response splitting)."""

from __future__ import annotations

import json
from typing import Any

import anyio

from mcp_oauth_proxy.adapters.asgi import send_response
from mcp_oauth_proxy.adapters.wsgi import _send
from mcp_oauth_proxy.core.http import Response

IDN_REDIRECT = "https://аррӏе.com/cb"  # Cyrillic look-alikes of "apple"
ENCODED = "https://%D0%B0%D1%80%D1%80%D3%8F%D0%B5.com/cb"
# No flow sends such a Location any more (redirect URIs are ASCII, and a
# record registered before that rule is never redirected to:
# test_redirect_uris.py); the adapters hold all the same.
IDN_LOCATION = Response(302, (("location", IDN_REDIRECT + "?code=c"), ("cache-control", "no-store")))


def _check_redirect(status: int, headers: list[tuple[bytes, bytes]]) -> None:
    assert status == 302
    assert dict(headers)[b"location"] == (ENCODED + "?code=c").encode("ascii")


def test_a_non_ascii_location_never_breaks_the_asgi_adapter() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    anyio.run(send_response, send, IDN_LOCATION)
    _check_redirect(sent[0]["status"], sent[0]["headers"])


def test_a_non_ascii_location_never_breaks_the_wsgi_adapter() -> None:
    started: list[Any] = []
    b"".join(_send(lambda status, headers: started.append((status, headers)), IDN_LOCATION))
    status, headers = started[0]
    _check_redirect(int(status.split()[0]), [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers])


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
