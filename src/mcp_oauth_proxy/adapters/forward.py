"""Forwarding authorized MCP traffic to a backend MCP server (streamable
HTTP): the ASGI app the standalone server puts behind its guard for tenants
that name a ``backend``.

Out to the backend: the request as the client sent it, minus hop-by-hop
headers (RFC 9110 §7.6.1), ``Host``, the client's ``Authorization`` (our
token never reaches the backend: MCP authorization, "token passthrough" is
forbidden), our own cookies, and every client-sent ``X-MCP-*`` header and
upstream-token header (no spoofing); plus the person as the guard found
them: ``X-MCP-User``, ``X-MCP-Client-Id``, ``X-MCP-Scopes`` (space
separated) and, when the tenant opts in, the fresh upstream access token in
the header it names. ``Mcp-Session-Id``, ``MCP-Protocol-Version`` and
``Last-Event-ID`` pass both ways like any end-to-end header. Where the
request came from is said anew, in ``Forwarded`` (RFC 7239) and the
``X-Forwarded-For/-Host/-Proto`` most servers read: the client's address,
host and scheme as the site trusts them (a trusted proxy's X-Forwarded-*
are believed; what a client sent of these, or of X-Real-IP and the like, is
dropped, while a trusted proxy's X-Forwarded-Prefix and the like pass on).
A body larger than
``max_body`` is refused with 413.

Back to the client: status and headers minus hop-by-hop ones, and the body
chunk by chunk as it arrives (Server-Sent Events reach the client event by
event; raw bytes, never decoded or recompressed). A backend that cannot be
reached answers 502 ``temporarily_unavailable``, with nothing about it in
the answer; one that fails mid-stream just ends the stream. A client that
goes away cancels the backend request.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any, AsyncIterator, Callable, Mapping
from urllib.parse import quote, urlsplit

import anyio
import attrs
import httpx

from ..core.errors import InvalidToken, OAuthError
from ..core.flows.guard import Principal, denial
from ..core.http import Response, json_response
from ..runtime import new_context
from .asgi import Receive, Scope, Send, answer_lifespan, request_of, send_response
from .site import PRINCIPAL_KEY, UPSTREAM_TOKEN_KEY, BodyTooLarge, Site, declared_length, payload_too_large

log = logging.getLogger("mcp_oauth_proxy")

# RFC 9110 §7.6.1 (and Proxy-*, by the same token); Host is the backend's own.
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
                         b"host", b"expect"})
# Set by us: a backend's would duplicate ours (Date) or describe it (Server).
_OURS_IN_RESPONSE = frozenset({b"date", b"server"})
_OUR_COOKIES = frozenset({"mcp_consent", "mcp_csrf", "__Host-mcp_consent", "__Host-mcp_csrf"})
# Said anew by us, always, from what the site trusts.
_ORIGIN_OURS = frozenset({b"forwarded", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto"})
# Other names backends read a client address, port, path prefix or scheme
# from: passed on from a trusted proxy, dropped (with every other
# X-Forwarded-*) from anyone else, whom the backend would otherwise believe.
_ORIGIN_CLAIMS = frozenset({
    b"x-real-ip", b"x-client-ip", b"true-client-ip", b"cf-connecting-ip", b"fastly-client-ip",
    b"x-cluster-client-ip", b"front-end-https", b"x-url-scheme",
})
_METHODS = ("GET", "POST", "DELETE")  # MCP streamable HTTP
# Field values are visible ASCII and spaces (RFC 9110 §5.5); OIDC subjects and
# scope tokens already are, anything else is percent-encoded rather than sent raw.
_VISIBLE = "".join(chr(c) for c in range(0x20, 0x7F))
# Connect fails fast; reads wait as long as the backend keeps a stream open.
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=None, write=30.0, pool=10.0)
MAX_BODY = 10 * 1024 * 1024


@attrs.frozen
class Backend:
    """Where one tenant's MCP traffic goes."""

    url: str
    # The tenant's resource path, which maps onto ``url`` (sub-paths appended).
    resource_path: str
    upstream_token_header: str | None = None


def _json(status: int, error: str, description: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return json_response({"error": error, "error_description": description}, status, headers)


def _unavailable() -> Response:
    return _json(502, "temporarily_unavailable", "the MCP server is not available at the moment; try again later",
                 (("retry-after", "5"),))


def _header_value(value: str) -> bytes:
    return quote(value, safe=_VISIBLE).encode("ascii")


def _dropped_by_connection(headers: Any) -> set[bytes]:
    # RFC 9110 §7.6.1: the Connection header names more hop-by-hop fields.
    return {token.strip().lower() for name, value in headers if name.lower() == b"connection"
            for token in value.split(b",") if token.strip()}


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


def _origin_headers(scheme: str, host: str, client: str) -> list[tuple[bytes, bytes]]:
    """Forwarded (RFC 7239) and the X-Forwarded-* most servers read instead."""
    node = _node(client)
    forwarded = f"for={_quoted(node)};host={_quoted(host)};proto={scheme}"
    return [(b"forwarded", _header_value(forwarded)), (b"x-forwarded-for", _header_value(client or "unknown")),
            (b"x-forwarded-host", _header_value(host)), (b"x-forwarded-proto", scheme.encode("ascii"))]


def _without_our_cookies(value: bytes) -> bytes:
    kept = [c for c in value.split(b";") if c.split(b"=", 1)[0].strip().decode("latin-1") not in _OUR_COOKIES]
    return b";".join(kept).strip()


class Forwarder:
    """An ASGI app behind :class:`~.asgi.BearerGuard`: sends each authorized
    request to its tenant's backend; tenants without one get a JSON 404.
    One pooled client, made in the loop that uses it, closed on lifespan
    shutdown."""

    def __init__(self, site: Site, backends: Mapping[str, Backend], *,
                 timeout: httpx.Timeout = DEFAULT_TIMEOUT, max_body: int = MAX_BODY) -> None:
        self.site = site
        self.backends = dict(backends)
        self.max_body = max_body
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await answer_lifespan(receive, send, self.aclose)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            return
        principal: Principal = scope[PRINCIPAL_KEY]
        backend = self.backends.get(principal.tenant)
        if backend is None:
            return await send_response(send, _json(404, "not_found", "no backend is configured for this resource"))
        if scope["method"] not in _METHODS:
            return await send_response(send, _json(405, "invalid_request", "the MCP endpoint takes GET, POST and DELETE",
                                           (("allow", ", ".join(_METHODS)),)))
        declared = next((v for k, v in scope.get("headers", ()) if k.lower() == b"content-length"), b"")
        if (declared_length(declared) or 0) > self.max_body:
            return await send_response(send, payload_too_large(self.max_body))
        extra: list[tuple[bytes, bytes]] = []
        if backend.upstream_token_header:
            try:
                token = await scope[UPSTREAM_TOKEN_KEY]()
            except InvalidToken as exc:
                return await send_response(send, self._denial(principal, exc))
            except OAuthError as exc:  # TemporarilyUnavailable: its text is fixed, safe to show
                # Its own Retry-After where it gives one (a refresh under way ends soon).
                retry = exc.headers or (("retry-after", "30"),)
                return await send_response(send, _json(exc.status, exc.error, exc.description, retry))
            extra.append((backend.upstream_token_header.lower().encode("latin-1"), _header_value(token)))
        await self._forward(scope, receive, send, backend, principal, extra)

    def _denial(self, principal: Principal, exc: InvalidToken) -> Response:
        # The same 401 the guard sends (RFC 6750 §3): sign in again.
        entry = self.site.entry(principal.tenant)
        assert entry is not None  # the guard found the principal at this site
        tenant = entry.tenant
        ctx = new_context(tenant, self.site.cookie_key)
        return denial(ctx, exc, tenant.required_scopes or tenant.scopes)

    async def _forward(self, scope: Scope, receive: Receive, send: Send, backend: Backend, principal: Principal,
                       extra: list[tuple[bytes, bytes]]) -> None:
        body_read = anyio.Event()
        gone = False

        async def body() -> AsyncIterator[bytes]:
            nonlocal gone
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone = True
                    raise _ClientGone()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body:  # a chunked body, or one longer than it said
                    raise BodyTooLarge()
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    body_read.set()
                    return

        async def watch(cancel: anyio.CancelScope) -> None:
            # Only once the body is read is receive() free to tell of a disconnect.
            nonlocal gone
            await body_read.wait()
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            cancel.cancel()

        headers = self._headers(scope, backend, principal, extra)
        # RFC 9112 §6.3: no Content-Length or Transfer-Encoding, no body; but an
        # HTTP/2 POST need not say, so a POST's body is always streamed on.
        has_body = scope["method"] == "POST" or any(
            name in (b"content-length", b"transfer-encoding") for name, _ in scope.get("headers", ()))
        if not has_body:
            body_read.set()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(watch, tasks.cancel_scope)
            await self._exchange(scope, send, backend, principal.tenant, headers, body() if has_body else None,
                                 lambda: gone)
            tasks.cancel_scope.cancel()

    async def _exchange(self, scope: Scope, send: Send, backend: Backend, tenant: str,
                        headers: list[tuple[bytes, bytes]],
                        content: AsyncIterator[bytes] | None, client_gone: Callable[[], bool]) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False, trust_env=False)
        request = self._client.build_request(scope["method"], _target(scope, backend), headers=headers,
                                             content=content)
        try:
            response = await self._client.send(request, stream=True)
        except BodyTooLarge:
            return await send_response(send, payload_too_large(self.max_body))
        except (httpx.HTTPError, _ClientGone) as exc:
            if client_gone():
                return
            # The class is enough to diagnose; the text could name the backend's internals.
            log.warning("tenant %s: the backend failed before answering: %s", tenant, type(exc).__name__)
            return await send_response(send, _unavailable())
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": _response_headers(response.headers.raw)})
            try:
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.HTTPError as exc:
                log.warning("tenant %s: the backend's answer ended early: %s", tenant, type(exc).__name__)
            await send({"type": "http.response.body", "body": b""})
        except OSError:
            pass  # the client went away while we were sending (ASGI spec)
        finally:
            await response.aclose()

    def _headers(self, scope: Scope, backend: Backend, principal: Principal,
                 extra: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        raw = scope.get("headers", ())
        dropped = _HOP_BY_HOP | _ORIGIN_OURS | _dropped_by_connection(raw) | {b"authorization"}
        if backend.upstream_token_header:
            dropped = dropped | {backend.upstream_token_header.lower().encode("latin-1")}
        client = scope.get("client")
        from_proxy = self.site.trusts(client[0] if client else None)
        headers = []
        for name, value in raw:
            name = name.lower()
            if name in dropped or name.startswith((b"proxy-", b"x-mcp-")):
                continue
            if not from_proxy and (name in _ORIGIN_CLAIMS or name.startswith(b"x-forwarded-")):
                continue
            if name == b"cookie":
                value = _without_our_cookies(value)
                if not value:
                    continue
            headers.append((name, value))
        if not any(name == b"accept-encoding" for name, _ in headers):
            # Else httpx asks for gzip, and we would pass on bytes the client never asked for.
            headers.append((b"accept-encoding", b"identity"))
        origin = request_of(self.site, scope)
        headers += _origin_headers(origin.scheme, origin.host, origin.remote_addr)
        headers += [
            (b"x-mcp-user", _header_value(principal.user_id)),
            (b"x-mcp-client-id", _header_value(principal.client_id)),
            (b"x-mcp-scopes", _header_value(" ".join(principal.scopes))),
            *extra,
        ]
        return headers

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


class _ClientGone(Exception):
    pass


def _target(scope: Scope, backend: Backend) -> str:
    """The backend URL for this request: the resource path maps onto the
    backend's, sub-paths appended, the query kept."""
    raw_path: bytes = scope.get("raw_path") or quote(scope["path"]).encode("ascii")
    prefix = quote(backend.resource_path).encode("ascii")
    suffix = raw_path[len(prefix):] if raw_path.startswith(prefix) else b""
    url = backend.url
    if suffix.strip(b"/"):
        url = url.rstrip("/") + suffix.decode("latin-1")
    query = scope.get("query_string", b"")
    return f"{url}?{query.decode('latin-1')}" if query else url


def _response_headers(raw: Any) -> list[tuple[bytes, bytes]]:
    dropped = _HOP_BY_HOP | _OURS_IN_RESPONSE | _dropped_by_connection(raw)
    return [(name.lower(), value) for name, value in raw
            if name.lower() not in dropped and not name.lower().startswith(b"proxy-")]


def backend_for(resource: str, url: str, upstream_token_header: str | None = None) -> Backend:
    """The Backend of a tenant whose protected resource is ``resource``."""
    return Backend(url, urlsplit(resource).path.rstrip("/"), upstream_token_header)
