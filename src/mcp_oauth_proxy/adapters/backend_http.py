"""The forwarder's HTTP/1.1 client to its backends (forward.py): one pool
of kept-alive connections per app, made in the loop that uses it.

On asyncio (``serve``'s uvicorn) the pool is aiohttp's: its C parser and
writer cost the least per request of the well-kept clients we measured
(``bench/bench_forward.py``; httpcore, with h11 under it and anyio's
cancel scopes around every read and write, cost about three times its
CPU). aiohttp runs only on asyncio, so on trio (``serve --trio``) the pool
is httpcore's.

Both send exactly the headers they are given (values of UTF-8 text:
the forwarder refuses any other), plus the body's framing (RFC 9112 §6:
its Content-Length when known, else chunks); neither keeps cookies,
follows redirects, decodes a body or reads proxy settings from the
environment (backends are reached directly). What fails on the way, in
any of their own ways, is :class:`BackendFailed`.

Bytes a backend sends beyond an answer (a backend that miscounts its
Content-Length, say, echoing what one person sent) are read as the answer
to the next request on that connection; closing a connection that has
them when it is given back, or that receives any while it waits in the
pool, as aiohttp and :class:`_CheckedConnector` do, is not enough: they
may arrive a moment after the next request went out on it (a review made
one person's bytes another's answer that way on most tries). So a
connection is never shared by two people: on asyncio each person
(tenant, user id) has a pool of their own, closed once idle; on trio
(httpcore, whose h11 keeps such bytes for the next answer) every
connection carries one request.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import aiohttp
import h11
import httpcore
import yarl

from ..upstream.closing_backend import ClosingBackend

# Connect fails fast; reads wait as long as the backend keeps a stream open.
DEFAULT_TIMEOUT: Mapping[str, float | None] = {"connect": 5.0, "read": None, "write": 30.0, "pool": 10.0}
# Enough connections kept open for a busy server's concurrent requests (each
# opened anew would cost the backend a handshake), each closed when idle a
# little shorter than servers' usual 5 s, so we never send on one the
# backend is closing.
MAX_CONNECTIONS = 256
KEEPALIVE_SECONDS = 4.0
# The longest response head line and field a backend may send (h11's own
# limit for a whole head is 100 KiB).
MAX_FIELD = 64 * 1024

Body = bytes | AsyncIterator[bytes] | None


class BackendFailed(Exception):
    """The backend could not be reached, or broke off or garbled its answer.
    Its text is the failure's class name only (the details could name the
    backend's internals)."""


class Answer(Protocol):
    """A backend's answer, its body still to be read."""

    status: int
    headers: list[tuple[bytes, bytes]]

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; raises BackendFailed if it ends early."""
        ...

    async def aclose(self) -> None: ...


Person = tuple[str, str]  # (tenant, user id): whose request it is


class Pool(Protocol):
    async def send(self, person: Person, method: str, url: str, headers: list[tuple[bytes, bytes]], body: Body,
                   length: int | None) -> Answer:
        """The backend's answer to ``person``'s request (its head read).
        ``length``: the body's length if known, else a body is sent in
        chunks. Raises BackendFailed, or whatever iterating ``body`` raised."""
        ...

    async def aclose(self) -> None: ...


def pool_for(library: str, timeout: Mapping[str, float | None], ssl_context: ssl.SSLContext | None) -> Pool:
    """The pool for the running event loop's library (``sniffio`` name)."""
    context = ssl_context or ssl.create_default_context()
    if library == "asyncio":
        return AiohttpPool(timeout, context)
    return HttpcorePool(timeout, context)


class _CheckedConnector(aiohttp.TCPConnector):
    """aiohttp's connector, but a kept-alive connection that received
    anything while it waited (a stray answer, or part of one) is closed,
    not used for the next request."""

    async def connect(self, *args: Any, **kwargs: Any) -> aiohttp.connector.Connection:
        while True:
            connection = await super().connect(*args, **kwargs)
            protocol = connection.protocol
            if protocol is None or not protocol.should_close:
                return connection
            connection.close()


class _PersonPool:
    """One person's aiohttp session (its connections), and their requests under way."""

    __slots__ = ("in_flight", "last_used", "session")

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.in_flight = 0
        self.last_used = 0.0

    def done(self) -> None:
        self.in_flight -= 1
        self.last_used = time.monotonic()


# What talking to the backend through aiohttp can fail with.
_AIOHTTP_FAILED = (aiohttp.ClientError, TimeoutError)


class AiohttpPool:
    def __init__(self, timeout: Mapping[str, float | None], ssl_context: ssl.SSLContext) -> None:
        self._ssl_context = ssl_context
        # pool: waiting for a free connection and connecting; connect: the TCP (and TLS) handshake.
        self._timeouts = aiohttp.ClientTimeout(total=None, connect=timeout.get("pool"),
                                               sock_connect=timeout.get("connect"), sock_read=timeout.get("read"))
        self._people: dict[Person, _PersonPool] = {}
        self._swept = time.monotonic()
        self._closing: set[asyncio.Future[None]] = set()  # quiet pools being closed

    def _new_session(self) -> aiohttp.ClientSession:
        connector = _CheckedConnector(limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_SECONDS,
                                      ssl=self._ssl_context)
        # Every outbound header is ours to say: none added for us (aiohttp
        # would say User-Agent, Accept, Accept-Encoding and a body's
        # Content-Type). DummyCookieJar: a backend's Set-Cookie goes to the
        # one client it answered, never into a jar.
        return aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"), timeout=self._timeouts,
            auto_decompress=False, trust_env=False, max_line_size=MAX_FIELD, max_field_size=MAX_FIELD)

    async def send(self, person: Person, method: str, url: str, headers: list[tuple[bytes, bytes]], body: Body,
                   length: int | None) -> Answer:
        # aiohttp writes str headers as UTF-8: byte for byte as they came.
        pairs = [(name.decode("latin-1"), value.decode("utf-8")) for name, value in headers]
        if length is not None and not isinstance(body, bytes):
            pairs.append(("Content-Length", str(length)))
        self._sweep()
        pool = self._people.get(person)
        if pool is None:
            pool = self._people[person] = _PersonPool(self._new_session())
        pool.in_flight += 1
        try:
            # encoded=True: the path and query go exactly as sent, not re-quoted.
            response = await pool.session.request(method, yarl.URL(url, encoded=True), headers=pairs,
                                                  data=body, allow_redirects=False)
        except BaseException as exc:
            pool.done()
            if isinstance(exc, _AIOHTTP_FAILED):
                raise BackendFailed(type(exc).__name__) from exc
            raise
        return _AiohttpAnswer(response, pool)

    def _sweep(self) -> None:
        """About once a second, takes out the pools of people with nothing
        under way for longer than a connection is kept (none left open),
        all at once (no request can take one up meanwhile), and closes
        them beside the request that swept them: it neither waits for
        that, nor, cancelled, cuts it short."""
        now = time.monotonic()
        if now - self._swept < 1.0:
            return
        self._swept = now
        quiet = [person for person, pool in self._people.items()
                 if pool.in_flight == 0 and now - pool.last_used > KEEPALIVE_SECONDS]
        if quiet:
            closing = asyncio.ensure_future(_close_all([self._people.pop(person).session for person in quiet]))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        people, self._people = self._people, {}
        await _close_all([pool.session for pool in people.values()])
        if self._closing:
            await asyncio.gather(*self._closing)


async def _close_all(sessions: list[aiohttp.ClientSession]) -> None:
    for session in sessions:
        await session.close()


class _AiohttpAnswer:
    def __init__(self, response: aiohttp.ClientResponse, pool: _PersonPool) -> None:
        self._response = response
        self._pool: _PersonPool | None = pool
        self.status: int = response.status
        self.headers: list[tuple[bytes, bytes]] = list(response.raw_headers)
        self._read = False

    async def chunks(self) -> AsyncIterator[bytes]:
        unwatch = _ended_on_loss(self._response)
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except _AIOHTTP_FAILED as exc:
            raise BackendFailed(type(exc).__name__) from exc
        finally:
            unwatch()
        self._read = True

    async def aclose(self) -> None:
        # Read to its end, the connection goes back to the pool; else it is closed.
        if self._read:
            self._response.release()
        else:
            self._response.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.done()


# The connections' "closed" futures we retrieve the outcome of (else asyncio
# logs an error lost with nobody waiting, once the future is collected).
_retrieved: weakref.WeakSet[asyncio.Future[None]] = weakref.WeakSet()


def _retrieve(closed: asyncio.Future[None]) -> None:
    if not closed.cancelled():
        closed.exception()


def _ended_on_loss(response: aiohttp.ClientResponse) -> Callable[[], None]:
    """Has a body being read end with an error if its connection is lost:
    aiohttp leaves it waiting for ever when a malformed chunk came before
    the loss. Returns what undoes that once the body is read."""
    content = response.content

    def lost(_: object = None) -> None:
        if not content.is_eof() and content.exception() is None:
            content.set_exception(aiohttp.ClientPayloadError("the connection was lost before the answer's end"))

    connection = response.connection
    if connection is None:  # the body is all in: the connection went back already
        return _nothing
    protocol = connection.protocol
    closed = protocol.closed if protocol is not None else None
    if closed is None:  # lost already
        lost()
        return _nothing
    if closed not in _retrieved:
        _retrieved.add(closed)
        closed.add_done_callback(_retrieve)
    closed.add_done_callback(lost)

    def unwatch() -> None:
        closed.remove_done_callback(lost)

    return unwatch


def _nothing() -> None:
    pass


# What talking to the backend through httpcore can fail with: its errors,
# and h11's own that it passes on unwrapped (a body that breaks its framing).
_HTTPCORE_FAILED = (httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError,
                    httpcore.UnsupportedProtocol, h11.ProtocolError)


class HttpcorePool:
    def __init__(self, timeout: Mapping[str, float | None], ssl_context: ssl.SSLContext) -> None:
        self._extensions = {"timeout": dict(timeout)}
        # No connection kept: h11 would read what a backend sent beyond an
        # answer as the next request's (see above).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, network_backend=ClosingBackend(), max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=0)

    async def send(self, person: Person, method: str, url: str, headers: list[tuple[bytes, bytes]], body: Body,
                   length: int | None) -> Answer:
        if length is not None:
            headers = [*headers, (b"content-length", str(length).encode("ascii"))]
        elif body is not None:
            headers = [*headers, (b"transfer-encoding", b"chunked")]
        # The target as given (httpcore would parse a URL string, and drop a
        # last segment's ";parameters").
        parts = urlsplit(url)
        target = parts.path.encode("latin-1") + (b"?" + parts.query.encode("latin-1") if parts.query else b"")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        request = httpcore.Request(method, httpcore.URL(scheme=parts.scheme.encode("ascii"),
                                                        host=(parts.hostname or "").encode("ascii"), port=port,
                                                        target=target or b"/"),
                                   headers=headers, content=b"" if body is None else body,
                                   extensions=self._extensions)
        try:
            response = await self._pool.handle_async_request(request)
        except _HTTPCORE_FAILED as exc:
            raise BackendFailed(type(exc).__name__) from exc
        return _HttpcoreAnswer(response)

    async def aclose(self) -> None:
        await self._pool.aclose()


class _HttpcoreAnswer:
    def __init__(self, response: httpcore.Response) -> None:
        self._response = response
        self.status = response.status
        self.headers = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            # An async pool's response streams asynchronously.
            async for chunk in cast(AsyncIterable[bytes], self._response.stream):
                yield chunk
        except _HTTPCORE_FAILED as exc:
            raise BackendFailed(type(exc).__name__) from exc

    async def aclose(self) -> None:
        await self._response.aclose()
