"""Scope and resource (audience) decisions."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from .errors import InvalidScope, InvalidTarget

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def parse_scope(value: str | None) -> tuple[str, ...]:
    """Split a scope parameter; malformed tokens give invalid_scope."""
    if value is None:
        return ()
    tokens = value.split(" ")
    if any(not _SCOPE_TOKEN.fullmatch(t) for t in tokens):
        raise InvalidScope("scope is malformed")
    # Keep the first occurrence of each, in order.
    return tuple(dict.fromkeys(tokens))


def choose_scope(
    requested: tuple[str, ...], allowed: tuple[str, ...], default: tuple[str, ...]
) -> tuple[str, ...]:
    """The scope to grant: the request within ``allowed``, or the default
    when nothing was asked (RFC 6749 §3.3)."""
    if not requested:
        return default
    unknown = [s for s in requested if s not in allowed]
    if unknown:
        raise InvalidScope("scope not allowed: " + " ".join(unknown))
    return requested


def normalize_resource(uri: str) -> str | None:
    """The canonical form of a resource indicator, or None if it is not one
    (RFC 8707 §2: absolute, no fragment). Scheme and host are case-insensitive
    (RFC 3986 §6.2.2.1) and a lone trailing slash does not change the resource.
    User info is refused (RFC 9110 §4.2.4: a recipient treats it as an error),
    never dropped: "https://x@host/mcp" is not "https://host/mcp"."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or "#" in uri or "@" in parts.netloc:
        return None
    scheme = parts.scheme.lower()
    default_port = {"https": 443, "http": 80}.get(scheme)
    netloc = parts.hostname.lower()
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if port is not None and port != default_port:
        netloc += f":{port}"
    path = parts.path.removesuffix("/")  # one slash only: "/mcp//" is another path
    return urlunsplit((scheme, netloc, path, parts.query, ""))


def check_resource(values: list[str] | None, resource: str) -> str:
    """Every ``resource`` asked for must be this tenant's protected resource;
    none asked means it. Returns the audience to bind tokens to."""
    ours = normalize_resource(resource)
    for value in values or []:
        if not value:
            continue
        if ours is None or normalize_resource(value) != ours:
            raise InvalidTarget("resource is not served by this authorization server")
    return resource
