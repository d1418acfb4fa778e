"""Which headers the forwarder (forward.py) passes from the client to the
backend and back, and the ones it says itself.

Every header name is compared as the servers behind it compare names:
lower-cased, and with "_" read as "-" (CGI and WSGI servers file both under
one ``HTTP_`` key, RFC 3875 §4.1.18, and many join them), so no spelling of
a header we drop or set gets past us to sit beside ours."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import quote

from ..core import cookies
from .header_values import VISIBLE, percent_encoded

Headers = Iterable[tuple[bytes, bytes]]

# RFC 9110 §7.6.1 (and Proxy-*, by the same token); Host is the backend's own.
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
                         b"host", b"expect"})
# Set by us: a backend's would duplicate ours (Date) or describe it (Server).
_OURS_IN_RESPONSE = frozenset({b"date", b"server"})
# Said anew by us, always, from what the site trusts.
_ORIGIN_OURS = frozenset({b"forwarded", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto"})
# Other names backends read a client address, port, path prefix or scheme
# from: passed on from a trusted proxy, dropped (with every other
# X-Forwarded-*) from anyone else, whom the backend would otherwise believe.
_ORIGIN_CLAIMS = frozenset({
    b"x-real-ip", b"x-client-ip", b"true-client-ip", b"cf-connecting-ip", b"fastly-client-ip",
    b"x-cluster-client-ip", b"front-end-https", b"x-url-scheme", b"client-ip", b"x-proxyuser-ip",
    b"x-original-forwarded-for", b"x-originating-ip", b"x-remote-ip", b"x-remote-addr", b"x-host", b"via",
    b"forwarded-for", b"x-forwarded", b"x-custom-ip-authorization", b"x-original-host", b"x-scheme",
    b"x-script-name",
    # Platforms' own (Fly, Envoy, App Engine, Azure Front Door, Vercel).
    b"fly-client-ip", b"x-envoy-external-address", b"x-appengine-user-ip", b"x-azure-clientip",
    b"x-azure-socketip", b"x-vercel-forwarded-for",
})
# Names some servers and frameworks route or pick the method by, instead of
# the request line the guard checked: dropped from everyone.
_REROUTING = frozenset({
    b"x-original-url", b"x-rewrite-url", b"x-original-uri", b"x-http-method-override", b"x-http-method",
    b"x-method-override", b"x-envoy-original-path", b"x-original-method", b"x-original-path", b"x-request-uri",
    # Next.js: a subrequest skips its middleware (CVE-2025-29927); its own routing.
    b"x-middleware-subrequest", b"x-invoke-path", b"x-invoke-query", b"x-invoke-output",
})
# Names an authenticating proxy tells its backend who signed in by (or
# hands it the person's tokens or client certificate in): the backend's one
# identity is our X-MCP-User, so these go, from everyone, by name or family.
_IDENTITY_CLAIMS = frozenset({
    b"remote-user", b"x-remote-user", b"x-remote-group", b"x-user", b"x-auth-user", b"x-authenticated-user",
    b"x-authenticated-userid", b"x-webauth-user", b"x-consumer-username", b"x-consumer-id",
    b"x-consumer-custom-id", b"x-credential-identifier", b"x-userinfo", b"x-id-token", b"x-access-token",
    b"x-token-subject", b"x-goog-iap-jwt-assertion", b"oidc-access-token", b"oidc-id-token",
    b"x-client-cert", b"x-client-verify", b"x-ssl-cert", b"ssl-client-cert", b"x-forwarded-client-cert",
    b"x-arr-clientcert", b"x-credential-username", b"x-proxy-user", b"auth-user", b"x-auth-email",
    b"x-auth-groups", b"x-email",
    # Google's API gateways and ESP, WSO2.
    b"x-endpoint-api-userinfo", b"x-apigateway-api-userinfo", b"x-jwt-assertion",
})
_IDENTITY_FAMILIES = (
    b"x-auth-request-", b"x-forwarded-user", b"x-forwarded-email", b"x-forwarded-preferred-username",
    b"x-forwarded-groups", b"x-forwarded-access-token", b"oidc-claim-", b"x-amzn-oidc-", b"x-ms-client-principal",
    b"x-ms-token-", b"x-goog-authenticated-user-", b"cf-access-", b"x-ssl-client-", b"ssl-client-",
    b"remote-", b"x-webauth-", b"x-pomerium-", b"tailscale-user-", b"x-authentik-", b"x-vouch-",
    b"impersonate-",  # Kubernetes: act as another user or group
)


_IDENTITY_SAFE = VISIBLE.replace("%", "")
_EDGE_SPACES = re.compile(r"^ +| +$")


# Every byte that is neither a letter nor a digit, as "-"; letters lower-cased.
_CANONICAL = bytes(b if chr(b).isascii() and chr(b).isalnum() else ord("-") for b in range(256)).lower()


def canonical(name: bytes) -> bytes:
    """A header name as the servers behind us may compare it: a WSGI or
    CGI-style server files "X_MCP_User" (and some "X.MCP.User") under the
    key it files "X-MCP-User" by, so every character that is neither a
    letter nor a digit counts as "-"."""
    return name.translate(_CANONICAL)


def header_value(value: str) -> bytes:
    # OIDC subjects and scope tokens are visible ASCII already; anything
    # else is percent-encoded rather than sent raw.
    return percent_encoded(value).encode("ascii")


@functools.lru_cache(maxsize=4096)
def identity_value(value: str) -> bytes:
    """A value of X-MCP-User, X-MCP-Client-Id or X-MCP-Scopes: percent-encoded
    UTF-8 with "%" itself encoded too, so that one reading (``unquote``)
    gives back exactly the value: "josé" and a user named "jos%C3%A9" are
    two people."""
    encoded = quote(value, safe=_IDENTITY_SAFE)
    # A field value's edge spaces are not part of it (RFC 9110 §5.5): they
    # are encoded, or the backend would read another value (or refuse it).
    return _EDGE_SPACES.sub(lambda run: "%20" * len(run[0]), encoded).encode("ascii")


def framing(headers: Headers) -> tuple[bytes | None, bool]:
    """(the Content-Length, whether a Transfer-Encoding came): the fields the
    server read the body by (RFC 9112 §6), by their exact names, as it read
    them (a ``Content_Length`` framed nothing; to_backend drops it anyway)."""
    length, chunked = None, False
    for name, value in headers:
        name = name.lower()
        if name == b"content-length":
            length = value
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked


def _connection_named(headers: Headers) -> set[bytes]:
    # RFC 9110 §7.6.1: the Connection header names more hop-by-hop fields.
    return {canonical(token.strip()) for name, value in headers if canonical(name) == b"connection"
            for token in value.split(b",") if token.strip()}


def _is_our_cookie(name: bytes) -> bool:
    return cookies.is_ours(name.strip().decode("latin-1"))


def _without_our_cookies(value: bytes) -> bytes:
    kept = [c for c in value.split(b";") if not _is_our_cookie(c.split(b"=", 1)[0])]
    return b";".join(kept).strip()


@functools.lru_cache(maxsize=256)
def _dropped_to_backend(token_header: str | None) -> frozenset[bytes]:
    dropped = _HOP_BY_HOP | _ORIGIN_OURS | _REROUTING | _IDENTITY_CLAIMS | {b"authorization", b"content-length"}
    return dropped | {canonical(token_header.encode("latin-1"))} if token_header else dropped


def forwarder_reserves(name: bytes) -> bool:
    """Whether the forwarder says a header of this name itself, or drops it
    from clients for what backends believe of it (an address, a route, a
    signed-in person): never a name to carry the upstream token in."""
    key = canonical(name)
    return (key in _dropped_to_backend(None) or key in _ORIGIN_CLAIMS or key == b"set-cookie"
            or key.startswith((b"proxy-", b"x-mcp-", b"x-forwarded-", *_IDENTITY_FAMILIES)))


def to_backend(headers: Headers, from_proxy: bool, token_header: str | None) -> list[tuple[bytes, bytes]]:
    """The client's headers that go on: not hop-by-hop ones, nor the body's
    framing (the outbound client frames what it sends), nor our token, our
    cookies, or any X-MCP-*, upstream-token, origin, re-routing or
    signed-in-user header (ours are said anew); a client's other address claims only from a
    trusted proxy."""
    headers = list(headers)
    dropped = _dropped_to_backend(token_header) | _connection_named(headers)
    kept = []
    for name, value in headers:
        name, key = name.lower(), canonical(name)
        if key in dropped or key.startswith((b"proxy-", b"x-mcp-", *_IDENTITY_FAMILIES)):
            continue
        if not from_proxy and (key in _ORIGIN_CLAIMS or key.startswith(b"x-forwarded-")):
            continue
        if key == b"accept-encoding" and name != key:
            continue  # we set it where the client did not: one spelling only
        if key == b"cookie":
            value = _without_our_cookies(value)
            if not value:
                continue
        kept.append((name, value))
    return kept


def to_client(headers: Headers, status: int = 200) -> list[tuple[bytes, bytes]]:
    """The backend's response headers that go on to the client; not a
    cookie of ours (a backend setting the browser cookie would know the
    value that binds a login to that browser), nor the Content-Length of a
    204 or 304, which have no body (RFC 9110 §8.6, §15.4.5: the server in
    front would wait for the body it says)."""
    headers = list(headers)
    dropped = _HOP_BY_HOP | _OURS_IN_RESPONSE | _connection_named(headers)
    if status in (204, 304):
        dropped = dropped | {b"content-length"}
    kept = []
    for name, value in headers:
        key = canonical(name)
        if key in dropped or key.startswith(b"proxy-"):
            continue
        if key == b"set-cookie" and _is_our_cookie(value.split(b"=", 1)[0]):
            continue
        kept.append((name.lower(), value))
    return kept


# RFC 9110 §5.5: a field value holds no control character but HTAB.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def has_control(headers: Headers) -> bool:
    """Whether any value holds a control character (a backend's, which the
    server in front of us would refuse to send, mid-answer)."""
    return _CONTROL.search(b"\t".join([value for _, value in headers])) is not None


def sendable_values(headers: Headers) -> bool:
    """Whether every value may go to a backend as it came: no control
    character, and any byte beyond ASCII part of UTF-8 text (what asyncio's
    client writes; so both clients send the same bytes)."""
    values = b"\t".join([value for _, value in headers])
    if _CONTROL.search(values) is not None:
        return False
    if values.isascii():
        return True
    try:
        values.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _quoted(value: str) -> str:
    # RFC 7239 §4: a value that is not a token is a quoted-string (RFC 9110 §5.6.4).
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _node(client: str) -> str:
    """A client address as an RFC 7239 §6 node: an IPv6 address in brackets;
    anything else (IPv4, with or without a port, or "[v6]:port" as a proxy
    may have sent it) as it is."""
    if not client:
        return "unknown"
    try:
        return f"[{client}]" if ipaddress.ip_address(client).version == 6 else client
    except ValueError:
        return client


@functools.lru_cache(maxsize=1024)
def origin_headers(scheme: str, host: str, client: str) -> tuple[tuple[bytes, bytes], ...]:
    """Forwarded (RFC 7239) and the X-Forwarded-* most servers read instead
    (the same for every request of one client: made once)."""
    node = _node(client)
    forwarded = f"for={_quoted(node)};host={_quoted(host)};proto={scheme}"
    return ((b"forwarded", header_value(forwarded)), (b"x-forwarded-for", header_value(client or "unknown")),
            (b"x-forwarded-host", header_value(host)), (b"x-forwarded-proto", scheme.encode("ascii")))
