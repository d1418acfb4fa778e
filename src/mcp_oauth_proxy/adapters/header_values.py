"""Header field values as they may go on the wire: visible ASCII and
spaces (RFC 9110 §5.5). What the ASGI and WSGI adapters answer with, and
what the forwarder says to a backend, pass through here."""

from __future__ import annotations

from urllib.parse import quote

import attrs

from ..core.http import Response
from .site import VISIBLE as VISIBLE  # importable from here too
from .site import server_error


class UnsendableHeader(ValueError):
    """A response header value with a control character in it."""


def percent_encoded(value: str) -> str:
    """``value`` with every character but visible ASCII and spaces
    percent-encoded (its UTF-8 bytes, RFC 3986 §2.1)."""
    return quote(value, safe=VISIBLE)


def _response_value(value: str) -> str:
    if value.isascii() and value.isprintable():
        return value
    if any(ch < " " or ch == "\x7f" for ch in value):
        raise UnsendableHeader()  # CR or LF would split the response
    return percent_encoded(value)


def sendable(response: Response) -> Response:
    """``response`` with its header values as they may be sent: characters
    beyond ASCII percent-encoded (right for a URI such as a Location built
    from a redirect URI; latin-1 could not even hold most of them). One with
    a control character is never sent: a server error goes instead."""
    values = "".join([value for _, value in response.headers])
    if values.isascii() and values.isprintable():
        return response  # nearly every response
    try:
        headers = tuple((name, _response_value(value)) for name, value in response.headers)
    except UnsendableHeader as exc:
        return server_error(f"a {response.status} response", exc)
    return attrs.evolve(response, headers=headers)
