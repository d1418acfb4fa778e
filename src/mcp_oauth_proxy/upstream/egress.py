"""How every outbound client reaches the internet: through which proxy (if
any) and trusting which certificates. Decided once per process, from the
configuration first and the standard environment variables second:

- proxy: ``server.outbound_proxy`` for every URL; else ``https_proxy`` /
  ``HTTPS_PROXY`` for https URLs and ``http_proxy`` (lower case only, as
  curl: "httpoxy") for http ones. ``no_proxy`` / ``NO_PROXY`` (curl's rules: a host and its
  subdomains, ``.suffix``, an IP address or network, ``*``) applies to either.
  Only ``http://`` proxies (HTTP CONNECT for https URLs).
- trust: certifi's CAs, or ``SSL_CERT_FILE``'s in their place (as OpenSSL
  reads it); ``server.ca_bundle`` is added to them, so a private CA is
  trusted beside the public ones.
- never ``.netrc``: every client is made with ``trust_env=False`` and given
  these settings; nothing else is read from the environment.

The Client ID Metadata Document fetcher follows the same proxy, asking it to
CONNECT to the address it checked (upstream/tunnel.py).

A request marked PUBLIC_ONLY (one to an organization's OAuth configuration:
an organization's admin chose its URLs, and must not reach our network
through it) goes only to a host whose every address is public, or in the
networks the operator lets that organization reach
(``server.organization_upstream_networks``: a list for every organization,
or a table by organization), and to the address that was checked (no
second DNS answer), through the proxy or not. The request's PUBLIC_ONLY
extension names the organization.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlsplit

import anyio.to_thread
import attrs
import certifi
import httpx

from .addresses import Address, Network, addresses_of, reachable

# The request extension marking a request PUBLIC_ONLY (see above).
PUBLIC_ONLY = "mcp_oauth_proxy.public_only"


class EgressError(ValueError):
    """A proxy or CA setting that cannot be used; the message names it."""


@functools.lru_cache(maxsize=16)
def _context(cafile: str, ca_bundle: str | None) -> ssl.SSLContext:
    # Loading a bundle takes tens of milliseconds; every client of the
    # process shares one context per choice of files (none changes it later).
    context = ssl.create_default_context(cafile=cafile)
    if ca_bundle is not None:
        context.load_verify_locations(cafile=ca_bundle)
    return context


def _default_context() -> ssl.SSLContext:
    return _context(certifi.where(), None)


@attrs.frozen
class Egress:
    """The process's decision (``egress_from``); ``Egress()``: straight
    out, trusting certifi's CAs."""

    # Their URLs may hold a password: never in a repr.
    https_proxy: str | None = attrs.field(default=None, repr=False)
    http_proxy: str | None = attrs.field(default=None, repr=False)
    no_proxy: tuple[str, ...] = ()
    ssl_context: ssl.SSLContext = attrs.field(factory=_default_context, eq=False, repr=False)
    # The private networks a PUBLIC_ONLY request may reach all the same: of
    # every organization, and (organization, its networks) of each named.
    reachable: tuple[Network, ...] = ()
    reachable_by: tuple[tuple[str, tuple[Network, ...]], ...] = ()

    def networks_for(self, organization: object) -> tuple[Network, ...]:
        """What a PUBLIC_ONLY request of ``organization`` may reach besides public addresses."""
        return self.reachable + next((n for name, n in self.reachable_by if name == organization), ())

    def proxy_for(self, url: str) -> str | None:
        """The proxy a request to ``url`` goes through; None: straight there."""
        parts = urlsplit(url)
        proxy = self.https_proxy if parts.scheme == "https" else self.http_proxy
        if proxy is None or bypasses(parts.hostname or "", self.no_proxy):
            return None
        return proxy

    def async_transport(self, *, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
        """An async httpx transport following these settings."""
        return _AsyncRouted(self, lambda proxy: httpx.AsyncHTTPTransport(
            verify=self.ssl_context, proxy=proxy, limits=limits, trust_env=False))


def bypasses(host: str, no_proxy: tuple[str, ...]) -> bool:
    """Whether ``host`` is reached without the proxy (curl's NO_PROXY rules)."""
    host = host.strip("[]").rstrip(".").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in no_proxy:
        if entry == "*":
            return True
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry.strip("[]"), strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = entry.lstrip(".").rstrip(".").lower()
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _proxy_url(value: str, where: str) -> str:
    # The environment's may leave out the scheme ("proxy:3128"), as curl allows.
    url = value if "://" in value else f"http://{value}"
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number, or out of range, raises here
    except ValueError:
        raise EgressError(f"{where}: must be an http:// proxy URL") from None
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise EgressError(f"{where}: must be an http:// proxy URL, like http://proxy.internal:3128")
    return url


def trust(ca_bundle: str | None, environ: Mapping[str, str]) -> ssl.SSLContext:
    """The CAs outbound TLS trusts (see the module's docstring)."""
    base = environ.get("SSL_CERT_FILE") or certifi.where()
    try:
        _context(base, None)
    except (OSError, ssl.SSLError):
        raise EgressError(f"SSL_CERT_FILE: {base} is not a readable PEM file of certificates") from None
    try:
        return _context(base, ca_bundle)
    except (OSError, ssl.SSLError):
        raise EgressError(f"server.ca_bundle: {ca_bundle} is not a readable PEM file of certificates") from None


def _first(environ: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    for name in names:
        if environ.get(name):
            return name, environ[name]
    return None


def egress_from(outbound_proxy: str | None, ca_bundle: str | None, environ: Mapping[str, str],
                reachable: Sequence[str] | Mapping[str, Sequence[str]] = ()) -> Egress:
    """The settings every outbound client follows; raises EgressError.
    ``reachable``: the networks a PUBLIC_ONLY request may reach besides
    public addresses (CIDR, or one address): of every organization, or by
    organization."""
    https_proxy: str | None
    http_proxy: str | None
    if outbound_proxy is not None:
        https_proxy = http_proxy = _proxy_url(outbound_proxy, "server.outbound_proxy")
    else:
        found = _first(environ, "https_proxy", "HTTPS_PROXY")
        https_proxy = _proxy_url(found[1], found[0]) if found else None
        # Lower case only, as curl: under CGI a request's Proxy header
        # becomes HTTP_PROXY ("httpoxy").
        found = _first(environ, "http_proxy")
        http_proxy = _proxy_url(found[1], found[0]) if found else None
    found = _first(environ, "no_proxy", "NO_PROXY")
    no_proxy = tuple(e.strip() for e in found[1].split(",") if e.strip()) if found else ()
    if isinstance(reachable, Mapping):
        every: tuple[Network, ...] = ()
        by = tuple((name, _networks(entries, f".{name}")) for name, entries in reachable.items())
    else:
        every, by = _networks(reachable, ""), ()
    return Egress(https_proxy, http_proxy, no_proxy, trust(ca_bundle, environ), every, by)


def _networks(entries: Sequence[str], where: str) -> tuple[Network, ...]:
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry))
        except ValueError:
            raise EgressError(f"server.organization_upstream_networks{where}: {entry!r} is not a network "
                              "like 10.20.0.0/16 or an address") from None
    return tuple(networks)


class Unreachable(httpx.ConnectError):
    """A PUBLIC_ONLY request's host resolves to no address, or to one it may not reach."""


def _target(request: httpx.Request) -> tuple[str, int]:
    return request.url.host, request.url.port or (443 if request.url.scheme == "https" else 80)


def _pin(request: httpx.Request, addresses: list[Address], networks: tuple[Network, ...]) -> None:
    """Send ``request`` to the first of ``addresses``, if every one may be
    reached (a host may mix public and private answers); its Host header
    (set when it was made) and TLS server name stay the host's, so the
    certificate is still verified for the host."""
    if not addresses or not all(reachable(a, networks) for a in addresses):
        raise Unreachable("the host resolves to no address an organization's configuration may reach",
                          request=request)
    request.extensions = {**request.extensions, "sni_hostname": request.url.host}
    request.url = request.url.copy_with(host=str(addresses[0]))


class _AsyncRouted(httpx.AsyncBaseTransport):
    def __init__(self, egress: Egress, make: Callable[[str | None], httpx.AsyncHTTPTransport]) -> None:
        self._egress = egress
        self._direct = make(None)
        self._proxied = {p: make(p) for p in {egress.https_proxy, egress.http_proxy} if p}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        proxy = self._egress.proxy_for(str(request.url))
        if request.extensions.get(PUBLIC_ONLY):
            found = await anyio.to_thread.run_sync(addresses_of, *_target(request), abandon_on_cancel=True)
            _pin(request, found, self._egress.networks_for(request.extensions[PUBLIC_ONLY]))
        return await (self._proxied[proxy] if proxy else self._direct).handle_async_request(request)

    async def aclose(self) -> None:
        for transport in (self._direct, *self._proxied.values()):
            await transport.aclose()
