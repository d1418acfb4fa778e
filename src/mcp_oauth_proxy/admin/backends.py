"""Which backends an organization's admin token may name for its servers
(``server.organization_backends``). A backend is where the forwarder sends a
server's requests and whose answers it passes back: one of an
organization's choosing would read any address the proxy reaches (the
admin listener, a cloud metadata service). So an organization names one
only beneath an address the operator listed; a global token, the CLI and
the configuration file are the operator's own, and name any."""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import SplitResult, urlsplit

from ..adapters.paths import is_safe_path

_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 3986 §2: what a URI is written with (unreserved, reserved, "%"). A
# space or a character beyond ASCII in a backend's path would go into the
# forwarded request line as it is (RFC 9112 §3: split on spaces).
_URI = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")


def written_as_uri(url: str) -> bool:
    """Whether ``url`` holds only what a URI may (RFC 3986 §2)."""
    return _URI.fullmatch(url) is not None


def _origin(parts: SplitResult) -> tuple[str, str, int | None]:
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())


def _parts(url: str) -> SplitResult | None:
    """``url`` split, if it is an http(s) URL with a host and nothing a
    reader could take elsewhere: no user info, query, fragment, dot
    segment or encoded slash."""
    if not written_as_uri(url):
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port that is not a number, or out of range, raises here
    except ValueError:
        return None
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    if parts.query or parts.fragment or "#" in url or "?" in url or not is_safe_path(parts.path):
        return None
    return parts


def allowed_entry_problem(entry: str) -> str | None:
    """What is wrong with an entry of ``server.organization_backends``."""
    if _parts(entry) is None:
        return "must be an http or https URL without user info, query, fragment or dot segments"
    return None


def backend_allowed(url: str, allowed: Sequence[str]) -> bool:
    """Whether ``url`` lies beneath one of ``allowed``: the same scheme,
    host and port, and its path the allowed one's or beneath it, segment
    by segment."""
    parts = _parts(url)
    if parts is None:
        return False
    for entry in allowed:
        base = _parts(entry)
        if base is None or _origin(base) != _origin(parts):
            continue
        prefix = base.path.rstrip("/")
        if parts.path.rstrip("/") == prefix or parts.path.startswith(prefix + "/"):
            return True
    return False
