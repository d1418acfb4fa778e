"""Picking the tenant of a request by its Host (and, for issuers with a
path, by that path prefix)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar
from urllib.parse import urlsplit

import attrs

from .tenant import Tenant

T = TypeVar("T")


def _authority(url: str) -> str:
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme.lower())
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


def normalize_host(host: str, scheme: str) -> str:
    host = host.strip().lower()
    default = {"https": "443", "http": "80"}.get(scheme.lower())
    name, sep, port = host.rpartition(":")
    if sep and not name.endswith("]") and "]" in port:
        return host  # a bare IPv6 literal without port
    if sep and port == default:
        return name
    return host


@attrs.frozen
class Places:
    """Where a tenant lives: its hosts (issuer's and resource's), and its
    issuer and resource paths (without a trailing slash)."""

    hosts: frozenset[str]
    prefixes: tuple[str, str]


# Paths no tenant's issuer or resource may take but the host's root one's
# own: a tenant at the root answers its OAuth endpoints and metadata there.
RESERVED = ("/.well-known", "/oauth", "/healthz", "/readyz")


def reserved(prefix: str) -> bool:
    return any(beneath(prefix, r) for r in RESERVED)


def beneath(path: str, prefix: str) -> bool:
    """The path is the prefix, or lies beneath it ("" is the root: all do)."""
    return not prefix or path == prefix or path.startswith(prefix + "/")


def intrudes(mine: Places, theirs: Places, beneath_root: bool = False) -> bool:
    """Whether a tenant at ``mine`` would answer some of the requests of one
    at ``theirs``: on a host they share, one's issuer or resource path is the
    other's, or lies beneath or above it (routing picks the longest prefix,
    so a path beneath another's takes part of its requests). With
    ``beneath_root``, beneath the other's root ("") is allowed: the one at
    the root answers only its own endpoints there, and RESERVED paths are
    kept out."""
    if not mine.hosts & theirs.hosts:
        return False
    for p in mine.prefixes:
        for q in theirs.prefixes:
            if p == q:
                return True
            if beneath(p, q) or beneath(q, p):
                if beneath_root and q == "":
                    continue
                return True
    return False


def places(tenant: Tenant) -> Places:
    """Parsed from the tenant's issuer and resource; the tenant directory
    (directory.py) does it once per tenant and set of tenants."""
    return Places(frozenset({_authority(tenant.issuer), _authority(tenant.resource)}),
                  (tenant.issuer_path, tenant.resource_path))


def pick(placed: Iterable[tuple[Places, T]], host: str, path: str, scheme: str = "https") -> T | None:
    """Of (places, value) pairs, the value whose issuer or resource lives at
    this host and path.

    Among tenants on one host, the longest issuer path that prefixes the
    request path wins (the first of equals); well-known URLs are matched by
    the path after the well-known segment (RFC 8414 §3.1 path insertion).
    """
    want = normalize_host(host, scheme)
    best: T | None = None
    best_len = -1
    for where, value in placed:
        if want not in where.hosts:
            continue
        for prefix in where.prefixes:
            if _path_matches(path, prefix) and len(prefix) > best_len:
                best, best_len = value, len(prefix)
    return best


def pick_tenant(tenants: Iterable[Tenant], host: str, path: str, scheme: str = "https") -> Tenant | None:
    """The tenant whose issuer or resource lives at this host and path (see :func:`pick`)."""
    return pick(((places(t), t) for t in tenants), host, path, scheme)


def _path_matches(path: str, prefix: str) -> bool:
    if not prefix:
        return True
    if path == prefix or path.startswith(prefix + "/"):
        return True
    if path.startswith("/.well-known/"):
        # /.well-known/<name><prefix>
        rest = path[len("/.well-known/"):]
        _, _, tail = rest.partition("/")
        return ("/" + tail) == prefix or ("/" + tail).startswith(prefix + "/")
    return False
