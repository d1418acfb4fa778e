"""Who a per-requester limit counts: one key per host that could send us
requests, however it writes its address."""

from __future__ import annotations

import ipaddress

# RFC 6177 / RFC 7934: an IPv6 host is given (and picks addresses from) a
# whole /64 at least; counted address by address, one host is 2**64 requesters.
_IPV6_HOST_PREFIX = 64
_MAX_KEY = 100


def requester_key(address: str) -> str:
    """``address`` (a peer's, or what a trusted proxy said: maybe with a
    port, maybe bracketed) as a limit counts it: an IPv4 address whole (an
    IPv4-mapped one as IPv4), an IPv6 address by its /64; anything
    unreadable as written, cut short."""
    text = address.strip()
    if text.startswith("["):  # "[v6]" or "[v6]:port"
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # "v4:port"
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return address[:_MAX_KEY]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, _IPV6_HOST_PREFIX), strict=False))
    return str(ip)
