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
the answer, and so does one whose answer could not be passed on (a final
1xx, a control character in a header value); one that fails mid-stream
leaves the answer unfinished, so the server closes the connection and the
client sees it cut short. A client that goes away cancels the backend
request. One person (or machine client) has at most ``per_person``
requests forwarded at once (429 beyond). Header values go as they came,
or the request is refused with 400: UTF-8 text without control characters.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import attrs
import sniffio

from ..core.errors import InvalidToken, OAuthError
from ..core.flows.guard import denial
from ..core.http import Response, json_response
from ..core.models import Principal
from ..logs import Throttled
from .asgi import Receive, Scope, Send, answer_lifespan, origin_of, raw_path, refuse_websocket, send_response
from .backend_http import DEFAULT_TIMEOUT, BackendFailed, Body, Pool, pool_for
from .forward_headers import (
    framing,
    has_control,
    header_value,
    identity_value,
    origin_headers,
    sendable_values,
    to_backend,
    to_client,
)
from .paths import is_safe_path, refused_path
from .site import PRINCIPAL_KEY, UPSTREAM_TOKEN_KEY, BodyTooLarge, Site, declared_length, payload_too_large

log = logging.getLogger("mcp_oauth_proxy")
# A backend that is down fails every request: one line a minute says so.
_backend_failed = Throttled(log, logging.WARNING, interval=60.0)

_METHODS = ("GET", "POST", "DELETE")  # MCP streamable HTTP
MAX_BODY = 10 * 1024 * 1024
PER_PERSON = 32


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
    Its backend client (backend_http.py: on asyncio, aiohttp with a pool
    per person; on trio, httpcore with one request per connection) is made
    in the loop that uses it and closed on lifespan shutdown."""

    def __init__(self, site: Site, backends: Mapping[str, Backend], *,
                 timeout: Mapping[str, float | None] = DEFAULT_TIMEOUT, max_body: int = MAX_BODY,
                 per_person: int = PER_PERSON, more: Callable[[str], Backend | None] | None = None,
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
        # Requests forwarded at once for one person (or machine client), by (tenant, user id).
        self.per_person = per_person
        self._in_flight: dict[tuple[str, str], int] = {}
        self._timeout = dict(timeout)
        self._pool: Pool | None = None

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
        headers = self._headers(scope, backend, principal, extra)
        if not sendable_values(headers):
            return await send_response(send, _json(400, "invalid_request", "a header value is not UTF-8 text, "
                                                   "or holds a control character"))
        person = (principal.tenant, principal.user_id)
        if self._in_flight.get(person, 0) >= self.per_person:
            return await send_response(send, _json(429, "temporarily_unavailable", "too many requests at once; "
                                                   "try again when one has ended", (("retry-after", "1"),)))
        slot = _Slot(self._in_flight, person)
        try:
            await self._forward(scope, receive, send, target, principal.tenant, headers, declared, has_body, slot)
        finally:
            slot.release()

    def _denial(self, principal: Principal, exc: InvalidToken) -> Response:
        # The same 401 the guard sends (RFC 6750 §3): sign in again.
        entry = self.site.entry(principal.tenant)
        assert entry is not None  # the guard found the principal at this site
        tenant = entry.tenant
        return denial(tenant, exc, tenant.required_scopes or tenant.scopes)

    async def _forward(self, scope: Scope, receive: Receive, send: Send, target: str, tenant: str,
                       headers: list[tuple[bytes, bytes]], length: int | None, has_body: bool,
                       slot: _Slot) -> None:
        client = _Client(slot)
        body: Body = None
        if has_body:
            first = await receive()
            if first["type"] == "http.disconnect":
                return
            chunk = first.get("body", b"")
            if len(chunk) > self.max_body:
                return await send_response(send, payload_too_large(self.max_body))
            if first.get("more_body", False):
                body = self._rest_of_body(chunk, length, receive, client)
            elif length is not None and len(chunk) != length:
                return await send_response(send, _misframed(tenant))
            else:
                body = chunk  # the whole body at once (most are): sent with the head
                client.body_read = True
        else:
            client.body_read = True
        exchange = self._exchange(send, scope["method"], target, tenant, headers, body, length, client)
        if sniffio.current_async_library() == "asyncio":
            await _until_gone_asyncio(exchange, receive, client)
        else:
            await _until_gone(exchange, receive, client)

    async def _rest_of_body(self, first: bytes, length: int | None, receive: Receive,
                            client: _Client) -> AsyncIterator[bytes]:
        """A body that came in more than one part, each sent on as it
        arrives; never more or less than its Content-Length says (else the
        backend would read the rest as another request: the connection is
        given up instead)."""
        size = len(first)
        if first:
            yield first
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                client.gone = True
                raise _ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:  # a chunked body, or one longer than it said
                client.too_large = True
                raise BodyTooLarge()
            ended = not message.get("more_body", False)
            if length is not None and (size > length or (ended and size != length)):
                raise _Misframed()
            if chunk:
                yield chunk
            if ended:
                client.body_read = True
                if client.body_done is not None:
                    client.body_done.set()
                return

    async def _exchange(self, send: Send, method: str, target: str, tenant: str,
                        headers: list[tuple[bytes, bytes]], body: Body, length: int | None,
                        client: _Client) -> None:
        if self._pool is None:
            self._pool = pool_for(sniffio.current_async_library(), self._timeout, self._ssl_context)
        try:
            answer = await self._pool.send(client.slot.person, method, target, headers, body, length)
        except (BackendFailed, BodyTooLarge, _ClientGone, _Misframed) as exc:
            # The body's own failures are told by what the body saw: a
            # client may wrap them in its own errors.
            client.slot.release()
            if client.gone:
                return
            client.answered = True
            if client.too_large:
                return await send_response(send, payload_too_large(self.max_body))
            _backend_failed("tenant %s: the backend failed before answering: %s", tenant, _failure(exc))
            return await send_response(send, _unavailable())
        try:
            headers = to_client(answer.headers, answer.status)
            if not 200 <= answer.status <= 599 or has_control(headers):
                # A final 1xx (101: we upgrade nothing), a status beyond
                # RFC 9110 §15's, or a value the server in front would
                # refuse to send once the answer had begun.
                _backend_failed("tenant %s: the backend's answer cannot be passed on (status %d)", tenant,
                                answer.status)
                client.slot.release()
                client.answered = True
                return await send_response(send, _unavailable())
            await send({"type": "http.response.start", "status": answer.status, "headers": headers})
            try:
                async for chunk in answer.chunks():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except BackendFailed as exc:
                # Not ended here: the server closes the connection on an
                # unfinished answer, so the client sees it is cut short
                # (an ending would pass the part for the whole).
                _backend_failed("tenant %s: the backend's answer ended early: %s", tenant, exc)
                return
            client.slot.release()
            client.answered = True
            await send({"type": "http.response.body", "body": b""})
        except OSError:
            pass  # the client went away while we were sending (ASGI spec)
        finally:
            await answer.aclose()

    def _headers(self, scope: Scope, backend: Backend, principal: Principal,
                 extra: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        client = scope.get("client")
        from_proxy = self.site.trusts(client[0] if client else None)
        headers = [(b"host", backend.host), *to_backend(scope.get("headers", ()), from_proxy,
                                                          backend.upstream_token_header)]
        if not any(name == b"accept-encoding" for name, _ in headers):
            # A backend may encode an answer to a request that does not say (RFC 9110
            # §12.5.3); the client said nothing of what it decodes.
            headers.append((b"accept-encoding", b"identity"))
        headers += origin_headers(*origin_of(self.site, scope))
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


class _Misframed(Exception):
    """The request's body is longer or shorter than its Content-Length said."""


def _misframed(tenant: str) -> Response:
    # Not the backend's fault, but what an outbound client's refusal has
    # always been: the backend was not asked.
    _backend_failed("tenant %s: the request body does not match its Content-Length", tenant)
    return _unavailable()


class _Slot:
    """One of a person's places among their requests forwarded at once (by
    ``(tenant, user id)`` in ``counts``), given back once: when the
    backend's part is over, before the client's answer ends (else the
    client's next request could find it still taken), or when the request
    ends."""

    __slots__ = ("_counts", "person")

    def __init__(self, counts: dict[tuple[str, str], int], person: tuple[str, str]) -> None:
        counts[person] = counts.get(person, 0) + 1
        self._counts: dict[tuple[str, str], int] | None = counts
        self.person = person

    def release(self) -> None:
        counts, self._counts = self._counts, None
        if counts is not None:
            left = counts.pop(self.person) - 1
            if left:
                counts[self.person] = left


class _Client:
    """What the forwarder knows of its client during one exchange."""

    gone = False  # it went away
    answered = False  # the end of its answer is being sent
    too_large = False  # its body went over the cap
    body_read = False  # its body was read to the end (or it has none)
    body_done: anyio.Event | None = None  # set when it is, for a watcher waiting for that

    def __init__(self, slot: _Slot) -> None:
        self.slot = slot  # its place among its person's requests at once


def _failure(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, BackendFailed) else type(exc).__name__


async def _until_gone(exchange: Awaitable[None], receive: Receive, client: _Client) -> None:
    """``exchange``, cancelled if the client goes away before the end of its
    answer is being sent (any event loop)."""
    async def watch(cancel: anyio.CancelScope) -> None:
        await _gone(receive, client)
        cancel.cancel()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(watch, tasks.cancel_scope)
        await exchange
        tasks.cancel_scope.cancel()


async def _until_gone_asyncio(exchange: Awaitable[None], receive: Receive, client: _Client) -> None:
    """:func:`_until_gone` on asyncio with one plain task beside it: an
    anyio task group costs more than the rest of forwarding does."""
    task = asyncio.current_task()
    assert task is not None

    async def watch() -> None:
        await _gone(receive, client)
        task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        await exchange
    except asyncio.CancelledError:
        # Ours (the client went away) is swallowed; anyone else's goes on.
        if not (client.gone and watcher.done()) or _uncancel(task) > 0:
            raise
    finally:
        # No await between the exchange's end and here: the watcher cannot
        # cancel this task once the exchange is over.
        watcher.cancel()


def _uncancel(task: asyncio.Task[Any]) -> int:
    """The cancellations still asked of ``task`` after ours (Python 3.11 on
    counts them; 3.10 does not)."""
    if sys.version_info >= (3, 11):
        return task.uncancel()
    return 0


async def _gone(receive: Receive, client: _Client) -> None:
    """Returns once the client has gone before its answer's end was being sent."""
    if not client.body_read:
        # Only once the body is read is receive() free to tell of a disconnect.
        client.body_done = anyio.Event()
        if not client.body_read:
            await client.body_done.wait()
    while (await receive())["type"] != "http.disconnect":
        pass
    if client.answered:
        # Once its answer's end is out, Hypercorn says "disconnect" as a
        # matter of course, and a cancel would cut its sending of the end
        # short: the connection was never closed.
        await anyio.sleep_forever()
    # Gone before its answer was out: the backend's work is cancelled.
    client.gone = True


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
