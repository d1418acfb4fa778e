"""Which addresses an outbound request may reach when whoever chose its URL
must not reach our own network (SSRF): a Client ID Metadata Document's URL
(client_metadata.py), an organization's OAuth configuration (egress.py)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


# RFC 6052 §2.1: the well-known NAT64 prefix; the last 32 bits are the IPv4
# address a translator connects to (DNS64 networks reach IPv4 hosts so).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# RFC 4291 §2.4: IANA assigns global unicast addresses only from 2000::/3.
# Outside it sit the forms that carry an IPv4 address where no rule looks
# (IPv4-compatible ::/96, IPv4-translated ::ffff:0:0:0/96, local-use NAT64
# 64:ff9b:1::/48 whose IPv4 may sit anywhere), which Python calls global.
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")


def _public(address: Address) -> bool:
    return address.is_global and not address.is_multicast


def address_allowed(address: Address, allow_loopback: bool) -> bool:
    """Public unicast only; loopback when allowed. Private, link-local,
    shared (CGNAT), multicast, reserved and unspecified ranges are refused,
    and so is an IPv6 form carrying such an IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # a socket to ::ffff:a.b.c.d reaches a.b.c.d here
            address = address.ipv4_mapped
        elif address in _NAT64:
            # Another host (the translator) connects on: its loopback is not ours.
            return _public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        elif address.sixtofour is not None:  # RFC 3056: 2002:a.b.c.d::/48 is routed to a.b.c.d
            return _public(address.sixtofour)
        elif not address.is_loopback and address not in _GLOBAL_UNICAST:
            return False
    if address.is_loopback:
        return allow_loopback
    # Teredo (2001::/32, a client behind NAT, never a server) is not global.
    return _public(address)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def reachable(address: Address, networks: Sequence[Network]) -> bool:
    """Public unicast (as ``address_allowed``), or within one of ``networks``:
    the private ones the operator lets such requests reach."""
    plain = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped else address
    return address_allowed(address, allow_loopback=False) or any(plain in network for network in networks)


def addresses_of(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to; none when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
