"""Redirect URI rules: what may be registered, and how a requested URI is
matched against the registered ones."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import SplitResult, urlsplit

from .errors import InvalidRedirectUri

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
# Schemes that run code or read local files in a browser; never a redirect.
_FORBIDDEN_SCHEMES = frozenset({"javascript", "data", "file", "vbscript", "about", "blob", "filesystem"})
# RFC 3986 §3.1
_SCHEME = re.compile(r"[a-z][a-z0-9+.\-]*")
# RFC 1123 §2.1 names (and "_", which some local names carry).
_DNS_NAME = re.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_.])?")
_BRACKETED = re.compile(r"\[[0-9A-Fa-f:.]+\](:[0-9]*)?")
MAX_URI_LENGTH = 2000


def is_loopback_host(host: str | None) -> bool:
    if host is None:
        return False
    host = host.lower()
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# Names the usual /etc/hosts gives the loopback address; and 0.0.0.0/8,
# "this network" (RFC 1122 §3.2.1.3), which Linux connects to itself.
_LOCAL_NAMES = frozenset({"localhost.localdomain", "localhost4", "localhost6", "ip6-localhost", "ip6-loopback"})
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


def is_this_machine(host: str | None) -> bool:
    """Whether a host reaches the machine the browser runs on: loopback
    however written (a trailing dot, a name under .localhost, RFC 6761
    §6.3, or another the usual hosts file gives it; an IPv4 address mapped
    into IPv6), or an address of 0.0.0.0/8 or the unspecified one, which
    connect there too. (A public name whose DNS answers loopback is not
    known here; such a redirect needs a certificate a browser trusts.)"""
    if host is None:
        return False
    name = host.lower().rstrip(".")
    if is_loopback_host(name) or name.endswith(".localhost") or name in _LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return any(a is not None and (a.is_loopback or a in _THIS_NETWORK) for a in (address, mapped)) \
        or address.is_unspecified


def _split(uri: str) -> SplitResult:
    """The parts of a redirect URI that reads the same to Python, to a
    browser and to a person, or InvalidRedirectUri saying why not."""
    if len(uri) > MAX_URI_LENGTH:
        raise InvalidRedirectUri("redirect URI is too long")
    # C0, DEL, spaces: none belongs in a URI (RFC 3986 §2), and some break headers.
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in uri):
        raise InvalidRedirectUri(f"redirect URI {uri!r} contains spaces or control characters")
    # A URI is ASCII (RFC 3986 §2): an international host is written in its
    # punycode form, other characters percent-encoded. Raw, they cannot go in
    # a Location header, and look-alike hosts would reach the consent page.
    if not uri.isascii():
        raise InvalidRedirectUri(
            f"redirect URI {uri!r} must be ASCII: write the host in punycode and percent-encode the rest")
    # WHATWG URL parsers (browsers) read a backslash as "/" in http(s) URIs,
    # RFC 3986 parsers do not: "http://evil.com\@127.0.0.1/" goes to
    # 127.0.0.1 for Python and to evil.com for a browser.
    if "\\" in uri:
        raise InvalidRedirectUri(f"redirect URI {uri!r} must not contain a backslash")
    try:
        parts = urlsplit(uri)
        if parts.port == 0:
            raise ValueError("port 0")
    except ValueError as exc:
        raise InvalidRedirectUri(f"redirect URI {uri!r} is not a valid URI") from exc
    # user:password@host shows a host that is not the one it goes to
    # ("https://trusted.example@evil.example/"); RFC 9700 §4.1.3 leaves no
    # reason to allow it in a redirect URI.
    if "@" in parts.netloc:
        raise InvalidRedirectUri(f"redirect URI {uri!r} must not contain user information")
    if not is_plain_host(parts.hostname) or not _plain_authority(parts.netloc):
        raise InvalidRedirectUri(f"redirect URI {uri!r} must name its host in letters, digits, '-' and '.'")
    return parts


def _plain_authority(netloc: str) -> bool:
    # Nothing but a port after an IP literal's "]" ("[::1]x" parses in
    # Python, not in a browser); no zone ("%eth0") anywhere.
    if "%" in netloc:
        return False
    return "[" not in netloc or _BRACKETED.fullmatch(netloc) is not None


def is_plain_host(host: str | None) -> bool:
    """A host every URL parser reads alike: a DNS name in ASCII letters,
    digits, "-", "_" and ".", or an IP literal. No percent-encoding: a
    browser decodes "good.com%2eevil.com" to "good.com.evil.com", Python
    does not. None (no host, as in a private-use scheme) passes."""
    if host is None:
        return True
    if _DNS_NAME.fullmatch(host):
        # A numeric last label makes it an IPv4 address to a browser, which
        # also reads "127.1", "0x7f.1" and "2130706433" as 127.0.0.1: only
        # the dotted-quad form says where it goes.
        last = host.rstrip(".").rpartition(".")[2]
        if last.isdigit() or last.startswith("0x"):
            try:
                return str(ipaddress.IPv4Address(host)) == host
            except ValueError:
                return False
        return True
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def is_well_formed(uri: str) -> bool:
    """Whether ``uri`` passes the syntax rules every registered redirect URI
    meets (a record registered under older rules may not)."""
    try:
        _split(uri)
    except InvalidRedirectUri:
        return False
    return True


_DEFAULT_PORTS = {"http": 80, "https": 443}


def shown_host(uri: str) -> str:
    """What the consent page names as where the person is sent: the host
    (no user information or path), in its ASCII form, with its port when
    that is not the scheme's own (another port is another site, RFC 6454
    §4) except on loopback, where a native app's port changes from run to
    run (RFC 8252 §7.3); for a private-use scheme, the scheme too (an app,
    not a web site, gets the person)."""
    scheme = uri.partition(":")[0].lower()
    try:
        parts = urlsplit(uri)
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host:
        return scheme + ":"
    if not host.isascii():  # never for a URI registered under today's rules
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            host = host.encode("ascii", "backslashreplace").decode("ascii")
    loopback = is_loopback_host(host)
    host = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS.get(scheme) and not loopback:
        host = f"{host}:{port}"
    return host if scheme in ("http", "https") else f"{scheme}://{host}"


def is_loopback_redirect(uri: str) -> bool:
    """Whether ``uri`` sends the browser to this computer, by a host written
    literally (no user information or backslash that a browser would read
    differently)."""
    return is_well_formed(uri) and is_loopback_host(urlsplit(uri).hostname)


def check_registrable(uri: str, application_type: str) -> None:
    """Raise InvalidRedirectUri unless ``uri`` may be registered.

    https anywhere; http only on loopback (RFC 8252 §7.3, RFC 9700 §4.1.3);
    private-use schemes for native apps (RFC 8252 §7.1); no fragment
    (RFC 6749 §3.1.2); never a scheme that runs script or reads files.
    """
    parts = _split(uri)
    scheme = parts.scheme.lower()
    if not scheme or not _SCHEME.fullmatch(scheme):
        raise InvalidRedirectUri(f"redirect URI {uri!r} must be an absolute URI")
    if "#" in uri:
        raise InvalidRedirectUri(f"redirect URI {uri!r} must not contain a fragment")
    if scheme in _FORBIDDEN_SCHEMES:
        raise InvalidRedirectUri(f"redirect URI scheme {scheme!r} is not allowed")
    if scheme == "https":
        if not parts.hostname:
            raise InvalidRedirectUri(f"redirect URI {uri!r} has no host")
        return
    if scheme == "http":
        if not is_loopback_host(parts.hostname):
            raise InvalidRedirectUri(
                f"redirect URI {uri!r}: http is allowed only for localhost and loopback addresses"
            )
        return
    if application_type != "native":
        raise InvalidRedirectUri(
            f"redirect URI {uri!r}: private-use URI schemes are only for native applications"
        )


def _without_port(uri: str) -> tuple[str, str, str, str] | None:
    """The parts a loopback redirect URI must share exactly, all but the port;
    None unless ``uri`` is an http loopback URI without a fragment."""
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    # Registered URIs never have a fragment (RFC 6749 §3.1.2), so a requested
    # one with "#" never matches.
    scheme = uri.partition(":")[0]  # as written; urlsplit lower-cases it
    if scheme.lower() != "http" or "#" in uri or not is_loopback_host(parts.hostname):
        return None
    netloc = parts.netloc
    head, sep, tail = netloc.rpartition(":")
    if sep and "]" not in tail and "@" not in tail:
        netloc = head  # drop the port; user info and host stay as written
    return (scheme, netloc, parts.path, parts.query)


def matches(requested: str, registered: tuple[str, ...]) -> bool:
    """Exact string match, except that a loopback redirect URI may use any
    port (RFC 8252 §7.3: native apps bind an ephemeral port). Everything but
    the port is compared as written (RFC 9700 §4.1.3)."""
    if not is_well_formed(requested):
        return False
    if requested in registered:
        return True
    key = _without_port(requested)
    if key is None:
        return False
    return any(_without_port(uri) == key for uri in registered)
