"""Request paths read once, the way a backend reads them: split on "/",
each segment percent-decoded once (RFC 3986 §3.3, §2.1). The guards pick
the tenant, and the forwarder the backend URL, by that reading; a path
that a normalising reader (httpx, a browser, many servers) would take
somewhere else is refused rather than normalised, so no two readers of one
request ever disagree about where it goes."""

from __future__ import annotations

import re
from urllib.parse import unquote

from ..core.http import Response, json_response

_ESCAPE = re.compile("%[0-9A-Fa-f]{2}")
# Control characters, and the U+FFFD a server decoding as UTF-8 puts in
# place of bytes that are not (WSGI's PATH_INFO, here).
_CONTROL = re.compile("[\x00-\x1f\x7f\ufffd]")


def is_safe_path(path: str) -> bool:
    """False for a path whose segments do not say where it goes: a dot
    segment ("." or "..", which RFC 3986 §5.2.4 removes along with the
    segment before), raw or percent-encoded, also before a ";" path
    parameter (some servers drop those first); a percent-encoded "/" (one
    segment here, two once decoded); a backslash, raw or encoded (a "/" to
    some servers); an escape still there after decoding ("%252e": a
    backend that decodes twice would read a dot); a control character or
    an escape that is not UTF-8 (``%00``, ``%c0%ae``: a lax decoder reads
    the end of the path, or a dot). ``path`` is as sent,
    still percent-encoded; a decoded one (WSGI's PATH_INFO) is decoded once
    more, which can only refuse more."""
    if "\\" in path:
        return False
    if "." not in path and "%" not in path and path.isascii() and path.isprintable():
        return True  # most paths, at a glance
    for segment in path.split("/"):
        try:
            decoded = unquote(segment, errors="strict")
        except UnicodeDecodeError:
            return False
        if _CONTROL.search(decoded):
            return False
        if "/" in decoded or "\\" in decoded or decoded.split(";", 1)[0] in (".", ".."):
            return False
        if "%" in decoded and _ESCAPE.search(decoded):
            return False
    return True


def refused_path() -> Response:
    return json_response({"error": "invalid_request", "error_description":
                          "the path has a dot segment, an encoded slash, a backslash, a double escape, "
                          "a control character or an escape that is not UTF-8"}, 400)
