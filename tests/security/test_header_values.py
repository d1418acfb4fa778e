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


def test_answers_sent_again_are_checked_again_by_the_asgi_adapter() -> None:
    """The adapter encodes the headers of an answer sent again and again
    (a tenant's 401, one object) once; each answer still goes out as checked,
    whatever was sent before it."""
    challenge = Response(401, (("www-authenticate", 'Bearer resource_metadata="x"'),), b"{}")
    split = Response(200, (("x-note", "a\r\nSet-Cookie: session=attacker"),))
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def main() -> None:
        for response in (challenge, challenge, IDN_LOCATION, IDN_LOCATION, split, split, challenge):
            await send_response(send, response)

    anyio.run(main)
    starts = sent[0::2]
    assert [m["status"] for m in starts] == [401, 401, 302, 302, 500, 500, 401]
    for start in starts[2:4]:
        _check_redirect(start["status"], start["headers"])
    for start in (starts[0], starts[1], starts[6]):
        assert start["headers"] == [(b"www-authenticate", b'Bearer resource_metadata="x"'), (b"content-length", b"2")]
    assert [m["body"] for m in sent[1::2]][-1] == b"{}"
    assert not any(b"attacker" in value for start in starts for _, value in start["headers"])
