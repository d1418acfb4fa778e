"""How many connections ``serve`` holds at once: from one address, and in
all. Each connection holds a file descriptor (two while a request is
forwarded); a hostile review filled a server's descriptor limit from one
address with 20,000 half-sent request heads, and every other client was
refused until they were closed. Past a cap a new connection is closed as
soon as it is accepted, before anything is read from it.

One address: an IPv4 address, an IPv6 /64 (core/requesters.py), except the
trusted proxies', through which every client comes (``trusted_proxies``);
in all: half the descriptors the process may open, less a reserve for the
database, outbound calls and the admin listener, unless set.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from .core.requesters import requester_key

# Descriptors kept for everything but client connections.
RESERVE = 256


def descriptor_limit() -> int | None:
    """The process's soft limit on open files; None where it has none."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def default_total(limit: int | None) -> int:
    """Connections in all, with ``limit`` descriptors: each may forward a
    request (a second descriptor), and RESERVE are kept for the rest."""
    return 0 if limit is None else max(64, (limit - RESERVE) // 2)


class ConnectionCaps:
    """Counts the connections held, by address; ``admit`` one as it is
    accepted, ``release`` it when it ends. ``total`` or ``per_address`` 0:
    no such cap. Used from the event loop's thread only."""

    def __init__(self, total: int, per_address: int, trusted: Iterable[str] = ()) -> None:
        self.total = total
        self.per_address = per_address
        self._trusted = tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted)
        self._held = 0
        self._by_address: dict[str, int] = {}

    def _key(self, peer: str | None) -> str | None:
        if peer is None or not self.per_address:
            return None
        try:
            if any(ipaddress.ip_address(peer.partition("%")[0]) in network for network in self._trusted):
                return None
        except ValueError:
            pass
        return requester_key(peer)

    def admit(self, peer: str | None) -> bool:
        """Whether a connection from ``peer`` (its address) may be held."""
        if self.total and self._held >= self.total:
            return False
        key = self._key(peer)
        if key is not None:
            held = self._by_address.get(key, 0)
            if held >= self.per_address:
                return False
            self._by_address[key] = held + 1
        self._held += 1
        return True

    def release(self, peer: str | None) -> None:
        """A connection ``admit`` let in has ended."""
        self._held -= 1
        key = self._key(peer)
        if key is not None:
            left = self._by_address[key] - 1
            if left:
                self._by_address[key] = left
            else:
                del self._by_address[key]
