"""Forwarding authorized MCP traffic to a backend MCP server (streamable
HTTP): the ASGI app the standalone server puts behind its guard for tenants
that name a ``backend``.

Out to the backend: the request as the client sent it, minus hop-by-hop
headers (RFC 9110 §7.6.1), ``Host``, the client's ``Authorization`` (our
token never reaches the backend: MCP authorization, "token passthrough" is
forbidden), our own cookies, and every client-sent ``X-MCP-*`` header and
upstream-token header, in any spelling (no spoofing: names are compared as a
WSGI server compares them, ``_`` as ``-``; forward_headers.py); plus the
person as the guard found them: ``X-MCP-User``, ``X-MCP-Client-Id``,
``X-MCP-Scopes`` (space separated), ``X-MCP-Principal-Type`` (``user``, or
``client`` for a client acting for itself, whose ``X-MCP-User`` is
``client:<client_id>``) and, when the tenant opts in, the fresh upstream
access token in the header it names (never for a principal that has none:
a client, or a person admitted by an ID-JAG). ``Mcp-Session-Id``,
``MCP-Protocol-Version`` and ``Last-Event-ID`` pass both ways like any
end-to-end header. Where the request came from is said anew, in
``Forwarded`` (RFC 7239) and the ``X-Forwarded-For/-Host/-Proto`` most
servers read: the client's address, host and scheme as the site trusts them
(a trusted proxy's X-Forwarded-* are believed; what a client sent of these,
or of X-Real-IP and the like, is dropped, while a trusted proxy's
X-Forwarded-Prefix and the like pass on). The path after the resource path
goes on after the backend's, segment by segment as sent; one with a dot
segment, an encoded slash or a backslash is refused with 400 (``paths.py``),
so the backend never reads a path outside its own. A body larger than
``max_body`` is refused with 413, one with both Content-Length and
Transfer-Encoding with 400; the body's framing is ours (RFC 9112 §6).

Back to the client: status and headers minus hop-by-hop ones, and the body
chunk by chunk as it arrives (Server-Sent Events reach the client event by
event; raw bytes, never decoded or recompressed). A backend that cannot be
reached answers 502 ``temporarily_unavailable``, with nothing about it in
the answer; one that fails mid-stream just ends the stream. A client that
goes away cancels the backend request.
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import anyio
import attrs
import h11
import httpcore

from ..core.errors import InvalidToken, OAuthError
from ..core.flows.guard import denial
from ..core.http import Response, json_response
from ..core.models import Principal
from ..logs import Throttled
from ..upstream.closing_backend import ClosingBackend
from .asgi import Receive, Scope, Send, answer_lifespan, raw_path, refuse_websocket, request_of, send_response
from .forward_headers import framing, header_value, identity_value, origin_headers, to_backend, to_client
from .paths import is_safe_path, refused_path
from .site import PRINCIPAL_KEY, UPSTREAM_TOKEN_KEY, BodyTooLarge, Site, declared_length, payload_too_large

log = logging.getLogger("mcp_oauth_proxy")
# A backend that is down fails every request: one line a minute says so.
_backend_failed = Throttled(log, logging.WARNING, interval=60.0)

_METHODS = ("GET", "POST", "DELETE")  # MCP streamable HTTP
# Connect fails fast; reads wait as long as the backend keeps a stream open.
DEFAULT_TIMEOUT = {"connect": 5.0, "read": None, "write": 30.0, "pool": 10.0}
MAX_BODY = 10 * 1024 * 1024
# Connections to the backends: enough kept open for a busy server's
# concurrent requests (each one opened anew would cost the backend a
# handshake), each closed when idle a little shorter than servers' usual
# 5 s, so we never send on one the backend is closing.
_POOL: dict[str, Any] = {"max_connections": 256, "max_keepalive_connections": 256, "keepalive_expiry": 4.0}
# What talking to the backend can fail with: httpcore's errors, and h11's
# own that it passes on unwrapped (a body that breaks its framing).
_BACKEND_FAILED = (httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError,
                   httpcore.UnsupportedProtocol, h11.ProtocolError)


@attrs.frozen
class Backend:
    """Where one tenant's MCP traffic goes."""

    url: str
    # The tenant's resource path, which maps onto ``url`` (sub-paths appended).
    resource_path: str
    upstream_token_header: str | None = None

    @functools.cached_property
    def host(self) -> bytes:
        """The Host header of a request to it (RFC 9110 §7.2)."""
        return urlsplit(self.url).netloc.rpartition("@")[2].encode("ascii")


def _json(status: int, error: str, description: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return json_response({"error": error, "error_description": description}, status, headers)


def _unavailable() -> Response:
    return _json(502, "temporarily_unavailable", "the MCP server is not available at the moment; try again later",
                 (("retry-after", "5"),))


class Forwarder:
    """An ASGI app behind :class:`~.asgi.BearerGuard`: sends each authorized
    request to its tenant's backend; tenants without one get a JSON 404.
    One connection pool, httpcore's own (a request through it costs two
    thirds of the CPU it costs through httpx, which adds cookies, URL
    models and header objects we have no use for), made in the loop that
    uses it, closed on lifespan shutdown."""

    def __init__(self, site: Site, backends: Mapping[str, Backend], *,
                 timeout: Mapping[str, float | None] = DEFAULT_TIMEOUT, max_body: int = MAX_BODY,
                 more: Callable[[str], Backend | None] | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.site = site
        # The CAs an https backend's certificate may come from: the same as
        # every outbound client's (upstream/egress.py: server.ca_bundle too).
        # Backends are reached directly, never through the outbound proxy.
        self._ssl_context = ssl_context
        self.backends = dict(backends)
        # The backend of a tenant not in ``backends`` (the database's servers, as last loaded).
        self.more = more
        self.max_body = max_body
        self._extensions = {"timeout": dict(timeout)}
        self._pool: httpcore.AsyncConnectionPool | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await answer_lifespan(receive, send, self.aclose)
        if scope["type"] == "websocket":
            return await refuse_websocket(send)  # MCP speaks streamable HTTP
        if scope["type"] != "http":
            return
        principal: Principal = scope[PRINCIPAL_KEY]
        backend = self.backends.get(principal.tenant)
        if backend is None and self.more is not None:
            backend = self.more(principal.tenant)
        if backend is None:
            return await send_response(send, _json(404, "not_found", "no backend is configured for this resource"))
        if scope["method"] not in _METHODS:
            return await send_response(send, _json(405, "invalid_request",
                                                   "the MCP endpoint takes GET, POST and DELETE",
                                                   (("allow", ", ".join(_METHODS)),)))
        path = raw_path(scope)
        if not is_safe_path(path):  # whatever stands in front: only a path that says where it goes
            return await send_response(send, refused_path())
        target = _target(path, scope.get("query_string", b""), backend)
        if target is None:
            return await send_response(send, _json(404, "not_found", "the path is outside the MCP endpoint"))
        length, chunked = framing(scope.get("headers", ()))
        if length is not None and chunked:
            # RFC 9112 §6.3: "ought to be handled as an error"; passed on,
            # the backend could read the body by the other one.
            return await send_response(send, _json(400, "invalid_request",
                                                   "a request has Content-Length or Transfer-Encoding, not both"))
        declared = declared_length(length or b"")
        if (declared or 0) > self.max_body:
            return await send_response(send, payload_too_large(self.max_body))
        extra: list[tuple[bytes, bytes]] = []
        # A principal with no upstream tokens (X-MCP-Principal-Type says
        # which) is forwarded without the header: it has none to give.
        if backend.upstream_token_header and principal.has_upstream_tokens:
            try:
                token = await scope[UPSTREAM_TOKEN_KEY]()
            except InvalidToken as exc:
                return await send_response(send, self._denial(principal, exc))
            except OAuthError as exc:  # TemporarilyUnavailable: its text is fixed, safe to show
                # Its own Retry-After where it gives one (a refresh under way ends soon).
                retry = exc.headers or (("retry-after", "30"),)
                return await send_response(send, _json(exc.status, exc.error, exc.description, retry))
            extra.append((backend.upstream_token_header.lower().encode("latin-1"), header_value(token)))
        # RFC 9112 §6.3: no Content-Length or Transfer-Encoding, no body; but an
        # HTTP/2 POST need not say, so a POST's body is always streamed on.
        has_body = scope["method"] == "POST" or length is not None or chunked
        headers = self._headers(scope, backend, principal, declared, has_body, extra)
        await self._forward(scope, receive, send, target, principal.tenant, headers, has_body)

    def _denial(self, principal: Principal, exc: InvalidToken) -> Response:
        # The same 401 the guard sends (RFC 6750 §3): sign in again.
        entry = self.site.entry(principal.tenant)
        assert entry is not None  # the guard found the principal at this site
        tenant = entry.tenant
        return denial(tenant, exc, tenant.required_scopes or tenant.scopes)

    async def _forward(self, scope: Scope, receive: Receive, send: Send, target: str, tenant: str,
                       headers: list[tuple[bytes, bytes]], has_body: bool) -> None:
        body_read = anyio.Event()
        client = _Client()

        async def body() -> AsyncIterator[bytes]:
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    client.gone = True
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
            await body_read.wait()
            while (await receive())["type"] != "http.disconnect":
                pass
            if not client.answered:
                # Gone before its answer was out: the backend's work is cancelled.
                # (Once it is out, Hypercorn says "disconnect" as a matter of
                # course, and a cancel would cut its sending of the end short:
                # the connection was never closed.)
                client.gone = True
                cancel.cancel()

        if not has_body:
            body_read.set()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(watch, tasks.cancel_scope)
            await self._exchange(scope, send, target, tenant, headers, body() if has_body else None, client)
            tasks.cancel_scope.cancel()

    async def _exchange(self, scope: Scope, send: Send, target: str, tenant: str,
                        headers: list[tuple[bytes, bytes]], content: AsyncIterator[bytes] | None,
                        client: _Client) -> None:
        if self._pool is None:
            self._pool = httpcore.AsyncConnectionPool(ssl_context=self._ssl_context or ssl.create_default_context(),
                                                      network_backend=ClosingBackend(), **_POOL)
        request = httpcore.Request(scope["method"], target, headers=headers,
                                   content=content if content is not None else b"", extensions=self._extensions)
        try:
            response = await self._pool.handle_async_request(request)
        except BodyTooLarge:
            client.answered = True
            return await send_response(send, payload_too_large(self.max_body))
        except (*_BACKEND_FAILED, _ClientGone) as exc:
            if client.gone:
                return
            # The class is enough to diagnose; the text could name the backend's internals.
            _backend_failed("tenant %s: the backend failed before answering: %s", tenant, type(exc).__name__)
            client.answered = True
            return await send_response(send, _unavailable())
        try:
            await send({"type": "http.response.start", "status": response.status,
                        "headers": to_client(response.headers)})
            try:
                # An async pool's response streams asynchronously.
                async for chunk in cast(AsyncIterable[bytes], response.stream):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except _BACKEND_FAILED as exc:
                _backend_failed("tenant %s: the backend's answer ended early: %s", tenant, type(exc).__name__)
            client.answered = True
            await send({"type": "http.response.body", "body": b""})
        except OSError:
            pass  # the client went away while we were sending (ASGI spec)
        finally:
            await response.aclose()

    def _headers(self, scope: Scope, backend: Backend, principal: Principal, length: int | None, has_body: bool,
                 extra: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        client = scope.get("client")
        from_proxy = self.site.trusts(client[0] if client else None)
        headers = [(b"host", backend.host), *to_backend(scope.get("headers", ()), from_proxy,
                                                          backend.upstream_token_header)]
        if not any(name == b"accept-encoding" for name, _ in headers):
            # A backend may encode an answer to a request that does not say (RFC 9110
            # §12.5.3); the client said nothing of what it decodes.
            headers.append((b"accept-encoding", b"identity"))
        # The body's framing is ours (RFC 9112 §6): its length, or chunks.
        if length is not None:
            headers.append((b"content-length", str(length).encode("ascii")))
        elif has_body:
            headers.append((b"transfer-encoding", b"chunked"))
        origin = request_of(self.site, scope)
        headers += origin_headers(origin.scheme, origin.host, origin.remote_addr)
        headers += [
            (b"x-mcp-user", identity_value(principal.user_id)),
            (b"x-mcp-client-id", identity_value(principal.client_id)),
            (b"x-mcp-scopes", identity_value(" ".join(principal.scopes))),
            (b"x-mcp-principal-type", principal.principal_type.encode("ascii")),
            *extra,
        ]
        return headers

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()


class _ClientGone(Exception):
    pass


class _Client:
    """What the forwarder knows of its client during one exchange."""

    gone = False  # it went away
    answered = False  # the end of its answer is being sent


def _target(path: str, query: bytes, backend: Backend) -> str | None:
    """The backend URL for a request path (as sent, one that
    :func:`~.paths.is_safe_path` passed): the resource path maps onto the
    backend's, the segments after it appended as sent, the query kept.
    Segments are compared decoded, as the guard picked the tenant by them.
    None for a path outside the resource path."""
    segments = path.split("/")
    prefix = backend.resource_path.split("/")
    if [unquote(s) for s in segments[:len(prefix)]] != [unquote(s) for s in prefix]:
        return None
    suffix = "/".join(segments[len(prefix):])
    url = backend.url
    if suffix.strip("/"):
        url = url.rstrip("/") + "/" + suffix
    return f"{url}?{query.decode('latin-1')}" if query else url


def backend_for(resource: str, url: str, upstream_token_header: str | None = None) -> Backend:
    """The Backend of a tenant whose protected resource is ``resource``."""
    return Backend(url, urlsplit(resource).path.rstrip("/"), upstream_token_header)
