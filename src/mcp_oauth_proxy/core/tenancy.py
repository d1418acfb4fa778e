"""Picking the tenant of a request by its Host (and, for issuers with a
path, by that path prefix)."""

from __future__ import annotations

import functools
from typing import Iterable
from urllib.parse import urlsplit

from .tenant import Tenant


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


def pick_tenant(tenants: Iterable[Tenant], host: str, path: str, scheme: str = "https") -> Tenant | None:
    """The tenant whose issuer or resource lives at this host and path.

    Among tenants on one host, the longest issuer path that prefixes the
    request path wins; well-known URLs are matched by the path after the
    well-known segment (RFC 8414 §3.1 path insertion).
    """
    want = normalize_host(host, scheme)
    best: Tenant | None = None
    best_len = -1
    for tenant in tenants:
        hosts, prefixes = _places(tenant.issuer, tenant.resource)
        if want not in hosts:
            continue
        for prefix in prefixes:
            if _path_matches(path, prefix) and len(prefix) > best_len:
                best, best_len = tenant, len(prefix)
    return best


@functools.lru_cache(maxsize=1024)
def _places(issuer: str, resource: str) -> tuple[frozenset[str], tuple[str, str]]:
    """Where a tenant lives: its hosts, and its issuer and resource paths.
    Parsed once per configuration, not per request."""
    paths = (urlsplit(issuer).path.rstrip("/"), urlsplit(resource).path.rstrip("/"))
    return frozenset({_authority(issuer), _authority(resource)}), paths


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
