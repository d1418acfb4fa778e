"""Running the served app: on uvicorn (httptools, uvloop) by default, on
Hypercorn under trio; each with the limits below, which neither server
keeps by itself.

No client holds a connection for long. Each server closes a connection
idle past ``keep_alive_timeout``. uvicorn's timer stops at the first byte
that comes, and is not started until a first answer has gone: a client
that sends nothing, or a request head a byte at a time, held its
connection for ever; and it reads a request head without a bound (52 MB
in 3 s). Here the timer runs from the connection's start or its last
answer until a whole request head has come, as Hypercorn's does, and a
head over ``MAX_HEAD`` bytes is refused (431), Hypercorn's (h11's) bound:
whether it comes in one read or many, and while an answer is under way
(pipelined behind a long tool call, a hostile review's head grew a server
past 5 GB); so are a chunked body's trailers (a 300 MB trailer section was
kept whole). Counted as the lines parsed, and as the reads that gave the
parser nothing (a line it holds unfinished): neither is more than what a
head or trailer section holds, so one within the bound is never refused.

A request whose answer is complete before its body is ends its connection:
uvicorn would read and drop the rest for as long as it came, each byte
restarting its idle timer. (``adapters/bodies.py`` has already drained
what came within a second.)

A connection ends when its client leaves. Hypercorn's reader stops at the
client's end of the stream, but the connection's task (and its socket, in
CLOSE-WAIT) lives on until the keep-alive timer of an idle connection runs
out: 200 requests, each on a connection its client then closed, held 200
descriptors for 5 seconds, enough to exhaust a descriptor limit.

A failure stays with its connection. Hypercorn lets an exception escape a
connection's task when a client's bytes trip its protocol code: a garbage
``HTTP2-Settings`` header on an h2c upgrade (after the 101 is sent), DATA
frames for an HTTP/2 stream already answered, a close racing a send on
trio. On asyncio that is a traceback in the log per connection (the
request line quoted in it); on trio it ends the whole server. Here it ends
that connection only, and says so in one short line, at most once a minute;
so do uvicorn's warnings about malformed requests, one per connection.
uvicorn's info lines are left out: they quote the URL of each WebSocket
handshake (there is no access log). Hypercorn's traceback for a request
whose client broke the protocol under the app (bytes after a refused
WebSocket handshake, a close after ``100 Continue``) is that line too.

A request names one host. RFC 9112 §3.2: a server MUST answer 400 to a
request with no Host, with two, or with one whose value no URI could hold;
uvicorn answered them all, its first Host picking the tenant. Here each is
answered 400 and its connection closed, on both servers (h11 refuses the
first two itself). A request whose target is absolute (``GET http://host/``)
names its host there, and Host is ignored (RFC 9112 §3.2.2): uvicorn routed
it by Host; Hypercorn found no tenant at such a path (404). Here both serve
it at the target's host.

No WebSocket is spoken: MCP's transport is streamable HTTP, and the app
refused every handshake. The servers' WebSocket protocols took the
connection over all the same: on uvicorn a request pipelined ahead of a
handshake got the handshake's 403 for its answer (and a traceback), on
trio a handshake behind an answer under way left its connection's task,
and its place under the connection caps, for good. Here a handshake is
answered 403 by the server itself, as an HTTP request, and its connection
ends.

An upgrade we do not speak is not half-made. RFC 9110 §7.8 lets a server
ignore an Upgrade (``h2c``, say), as Hypercorn does; uvicorn's httptools
cannot: it skips the body of any request with ``Connection: Upgrade`` and
drops the bytes after its head (a token request lost its form, a
forwarded POST its body). Here such a request with a body is refused
(400), and one without is answered; either way its connection then ends.

A client must read what it asked for. Neither server bounds how long an
answer may wait on a client that does not read it (an event stream it
stopped reading held its connection, and the backend's stream, for ever):
past ``send_timeout`` the connection is dropped. That clock starts only
once writing blocks, so the kernel holds little unsent for a connection
(``UNSENT_LOWAT``; it took megabytes of answers from a client that asked
on and never read), and uvicorn pauses writing as soon as the kernel takes
no more, not 64 KiB later (a few answers left unread below that mark held
a connection for good). The clock measures a client that takes nothing:
uvicorn's starts again whenever the bytes held for the client go down,
trio's runs per 16 KiB sent. A connection given up on is reset
(``reset_on_close``); one closed the usual way lingers until its client
has taken all the kernel holds for it, judged by the same clock
(``_ClosingTransport``, ``_HypercornConnection._lingered``): either way
none sits minutes in FIN_WAIT1, outside the caps.
uvicorn also queued every request a client pipelined ahead of its
answers, reading on after each answer (one connection took gigabytes):
past ``MAX_PIPELINED`` waiting requests the connection is dropped, and
nothing more is read while any wait.
When a client leaves, every request of its connection hears so: uvicorn told
only the one parsed last, and the one being answered wrote on to the closed
connection.

No address holds every connection: past ``max_connections_per_address`` (or
``max_connections`` in all) a connection is closed as it is accepted
(connection_caps.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import logging
import re
import socket
import struct
import sys
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import anyio
import h11
import httptools
import trio
import uvicorn
from hypercorn.config import Config as HypercornConfig
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .adapters.bodies import declares_body
from .config import ServerConfig
from .connection_caps import ConnectionCaps, default_total, descriptor_limit
from .logs import Throttled

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

log = logging.getLogger("mcp_oauth_proxy")
_failed = Throttled(log, logging.INFO, interval=60.0)

# What a send or receive fails with when the client broke the connection or
# its protocol under the app (trio's own errors, h11's, asyncio's).
_BROKEN_STREAM = (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError)
_CLIENT_CAUSED = (*_BROKEN_STREAM, anyio.BrokenResourceError, anyio.ClosedResourceError, h11.ProtocolError,
                  ConnectionError)

# Bytes of a request head a connection holds while it waits for the rest (h11's bound).
MAX_HEAD = 16 * 1024
# Seconds the answers under way get to finish once the server is told to stop (Hypercorn's).
GRACE = 3.0
# Requests a client may send ahead of the answers to its earlier ones (HTTP/1.1
# pipelining, RFC 9112 §9.3.2); past them its connection is closed.
MAX_PIPELINED = 32

# Bytes an answer may leave unsent in the kernel for a connection (Linux's
# TCP_NOTSENT_LOWAT): past them writing blocks, so send_timeout can start.
# Unset, the kernel took megabytes of answers a client never read before
# the server's writing was held up at all. What is in flight is not
# bounded by it: a reading client's throughput is not.
UNSENT_LOWAT = 16 * 1024
_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", None)
try:  # not on Windows
    import fcntl
    import termios

    _OUTQ: int | None = getattr(termios, "TIOCOUTQ", None)  # SIOCOUTQ on Linux
except ImportError:  # pragma: no cover
    _OUTQ = None
_TCP_INFO = getattr(socket, "TCP_INFO", None)
_SENDING = (1, 8)  # Linux's TCP_ESTABLISHED and TCP_CLOSE_WAIT: what is unsent may yet go


def reset_on_close(sock: Any) -> None:
    """Makes closing ``sock`` reset its connection (SO_LINGER 0): unsent
    bytes are dropped. A connection given up on is gone at once; closed
    the usual way, its kernel side sat minutes in FIN_WAIT1 behind answers
    its client never read, outside every cap."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:  # gone already
        pass


def hold_little_unsent(sock: Any) -> None:
    """Sets UNSENT_LOWAT on an accepted TCP socket, where the system has it."""
    if _NOTSENT_LOWAT is None or sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _NOTSENT_LOWAT, UNSENT_LOWAT)
    except OSError:  # not TCP (a Unix socket), or gone already
        pass


def unacknowledged(sock: Any) -> int:
    """Bytes the kernel holds for a connection that its client has not
    acknowledged (SIOCOUTQ); 0 where the system cannot say, or the socket
    is gone."""
    if _OUTQ is None or sock is None:
        return 0
    try:
        # Reset or closed, a connection still counts what it had not sent
        # (SIOCOUTQ reads its sequence numbers), but none of it will be.
        if _TCP_INFO is not None and sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 1)[0] not in _SENDING:
            return 0
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0"))[0])
    except (OSError, ValueError):
        return 0


# How often a closing connection looks whether its client took the rest (seconds).
LINGER_POLL = 0.25


class _Taking:
    """Whether a client takes what is held for it: stalled once the bytes
    held have not gone down for ``timeout`` seconds (send_timeout, the most
    a client may take nothing)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._least: int | None = None
        self._since = 0.0

    def stalled(self, held: int, now: float) -> bool:
        if self._least is None or held < self._least:
            self._least, self._since = held, now
            return False
        return now - self._since >= self.timeout


def _left_unread(send_timeout: float) -> None:
    _failed("closed a connection whose client left its answers unread for %g s", send_timeout)


def _cut(transport: Any) -> None:
    """Ends an asyncio connection at once, reset: nothing it left unsent is kept."""
    reset_on_close(transport.get_extra_info("socket"))
    transport.abort()


class _ClosingTransport:
    """uvicorn's view of a connection's transport: the transport itself
    (its methods bound once, no call in between), but its close lingers.
    Closed at once, a connection whose client had not yet taken its last
    answer stayed in the kernel, FIN_WAIT1 behind it, some five minutes,
    outside every cap. Here the close waits until the kernel holds nothing
    the client has not acknowledged; a client that takes none of it for
    ``send_timeout`` is reset. Meanwhile what the client sends is no
    request (:class:`_Discarding`), and the descriptor and its place under
    the caps are held. Every close of uvicorn's, and of ours, goes through
    it."""

    def __init__(self, transport: asyncio.Transport, send_timeout: float, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._send_timeout, self._loop = transport, send_timeout, loop
        self._closing = False
        for name in ("write", "get_extra_info", "set_protocol", "get_protocol", "pause_reading", "resume_reading",
                     "abort", "get_write_buffer_size", "set_write_buffer_limits"):
            setattr(self, name, getattr(transport, name))

    def is_closing(self) -> bool:
        return self._closing or self._transport.is_closing()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._transport.is_closing():
            return
        if not self._left():
            self._transport.close()
            return
        self._transport.set_protocol(_Discarding(self._transport.get_protocol(), self._transport))
        self._transport.resume_reading()
        self._linger(_Taking(self._send_timeout))

    def _left(self) -> int:
        return self._transport.get_write_buffer_size() + unacknowledged(self._transport.get_extra_info("socket"))

    def _linger(self, taking: _Taking) -> None:
        if self._transport.is_closing():  # gone meanwhile
            return
        left = self._left()
        if left == 0:
            self._transport.close()
        elif taking.stalled(left, self._loop.time()):
            _left_unread(self._send_timeout)
            _cut(self._transport)
        else:
            self._loop.call_later(LINGER_POLL, self._linger, taking)


class _Discarding(asyncio.Protocol):
    """What reads a connection whose close lingers: its last request was its
    last, so what comes now is read and dropped (left unread, it would make
    the close a reset, and a client could lose the end of its answer), up
    to MAX_HEAD bytes; past them reading stops. The connection's own
    protocol still hears of writing and of the end."""

    def __init__(self, protocol: Any, transport: asyncio.Transport) -> None:
        self._protocol, self._transport = protocol, transport
        self._budget = MAX_HEAD  # then reading stops: a flood would cost a core for nothing

    def data_received(self, data: bytes) -> None:
        self._budget -= len(data)
        if self._budget < 0:
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        return True  # what is left still goes out

    def pause_writing(self) -> None:
        self._protocol.pause_writing()

    def resume_writing(self) -> None:
        self._protocol.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._protocol.connection_lost(exc)


# RFC 9110 §7.2: Host = uri-host [ ":" port ] (RFC 3986 §3.2.2: an IP
# literal in brackets, else a reg-name, which an IPv4 address also is).
_HOST = re.compile(rb"(?:\[(?:[0-9A-Fa-f:.]+|v[0-9A-Fa-f]+\.[A-Za-z0-9._~!$&'()*+,;=:-]+)\]"
                   rb"|(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*)(?::[0-9]*)?")


@functools.lru_cache(maxsize=1024)  # a server hears the same few hosts: each checked once
def valid_host(value: bytes) -> bool:
    """Whether a Host field value is one a URI's authority could hold."""
    return _HOST.fullmatch(value) is not None


def one_valid_host(headers: list[tuple[bytes, bytes]], http_version: str) -> bool:
    """RFC 9112 §3.2: exactly one Host (at most one in an HTTP/1.0 request;
    §2.5: a later 1.x is read as 1.1), its value valid once trimmed of the
    whitespace around it (§5: not part of the value), as which it is left
    in ``headers`` (names lower-cased)."""
    at = None
    for i, (name, _) in enumerate(headers):
        if name == b"host":
            if at is not None:
                return False
            at = i
    if at is None:
        return http_version == "1.0"
    value = headers[at][1]
    trimmed = value.strip(b" \t")
    if len(trimmed) != len(value):
        headers[at] = (b"host", trimmed)
    return valid_host(trimmed)


async def _bad_target(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await _refuse(send, b"A request's target is a path, or an http or https URL without user info "
                        b"(RFC 9112 section 3.2).\n")


async def _bad_host(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await _refuse(send, b"A request names exactly one host, in one Host header field (RFC 9112 section 3.2).\n")


def host_of_target(target: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
    """RFC 9112 §3.2.2: a request whose target is absolute (``GET
    http://host/path``) names its host there, and Host is ignored: the
    target's is put in ``headers`` (in place of its one Host, or as it, in
    HTTP/1.0). False for a target no origin server of ours reads: another
    scheme, user info (RFC 9110 §4.2.4: an error), an authority (CONNECT)
    or one httptools cannot parse."""
    if target == b"*":
        return True  # OPTIONS * (RFC 9112 §3.2.4): the server itself
    if not target[:8].lower().startswith((b"http://", b"https://")):
        return False
    try:
        url = httptools.parse_url(target)
    except httptools.HttpParserInvalidURLError:
        return False
    if url.userinfo is not None or not url.host:
        return False
    host = url.host
    authority = (b"[" + host + b"]" if b":" in host else host) + (b":%d" % url.port if url.port else b"")
    for i, (name, _) in enumerate(headers):
        if name == b"host":
            headers[i] = (name, authority)
            return valid_host(authority)
    headers.append((b"host", authority))
    return valid_host(authority)


def origin_form(target: bytes) -> bytes:
    """An absolute target's path and query (RFC 9112 §3.2.1), as an origin
    server reads them; ``host_of_target`` said it parses."""
    url = httptools.parse_url(target)
    return (url.path or b"/") + (b"?" + url.query if url.query else b"")


async def _upgrade_with_body(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await _refuse(send, b"A request asking to upgrade (Connection: Upgrade) to anything but a WebSocket "
                        b"cannot carry a body here: send it without the Upgrade.\n")


async def _no_websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await _refuse(send, b"No endpoint here takes a WebSocket: MCP speaks streamable HTTP.\n", 403)


def asks_for_websocket(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request's Upgrade names the WebSocket protocol (RFC 6455 §4.1)."""
    return any(name.lower() == b"upgrade" and b"websocket" in value.lower() for name, value in headers)


async def _refuse(send: Any, body: bytes, status: int = 400) -> None:
    """``status`` (400), in plain text, and the connection closed."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode("ascii")), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


# What serve runs on: uvicorn (the default), Hypercorn on trio (--trio); and
# Hypercorn on asyncio, what it ran on before (bench/bench_guard.py compares them).
SERVERS = ("uvicorn", "hypercorn-trio", "hypercorn")


def event_loop(on: str) -> dict[str, Any]:
    """``anyio.run``'s keyword arguments for the event loop server ``on`` runs in."""
    if on == "hypercorn-trio":
        return {"backend": "trio"}
    if on == "uvicorn" and importlib.util.find_spec("uvloop") is not None:  # not on Windows
        return {"backend": "asyncio", "backend_options": {"use_uvloop": True}}
    return {"backend": "asyncio"}


def more_descriptors() -> None:
    """The soft limit on open files raised to the hard one: each forwarded
    request holds two (the client's connection and the backend's), and the
    usual soft limit of 1024 would run out at some 500 event streams."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(app: Any, server: ServerConfig, until: Callable[[], Awaitable[None]], on: str = "uvicorn") -> None:
    """Serve ``app`` on server ``on`` (in its event_loop) until ``until()`` returns."""
    more_descriptors()
    if on == "uvicorn":
        return await _on_uvicorn(app, server, until)
    harden_connections()
    if on == "hypercorn-trio":
        from hypercorn.trio import serve as on_trio

        await on_trio(app, hypercorn_config(server), shutdown_trigger=until)
    else:
        from hypercorn.asyncio import serve as on_asyncio

        await on_asyncio(app, hypercorn_config(server), shutdown_trigger=until)


# -- uvicorn ------------------------------------------------------------------------


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the caller says when to stop (``until``)


async def _on_uvicorn(app: Any, server: ServerConfig, until: Callable[[], Awaitable[None]]) -> None:
    running = _Server(uvicorn_config(app, server))

    async def stop() -> None:
        await until()
        running.should_exit = True

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(stop)
        await running.serve()
        tasks.cancel_scope.cancel()


def connection_caps(server: ServerConfig) -> ConnectionCaps:
    """The caps on connections held (connection_caps.py), once the
    descriptor limit is raised (``more_descriptors``)."""
    total = server.max_connections or default_total(descriptor_limit())
    return ConnectionCaps(total, server.max_connections_per_address, server.trusted_proxies)


def _peer_address(peername: Any) -> str | None:
    return peername[0] if isinstance(peername, tuple) and peername and isinstance(peername[0], str) else None


def uvicorn_config(app: Any, server: ServerConfig) -> uvicorn.Config:
    host, _, port = server.listen.rpartition(":")
    logging.getLogger("uvicorn.error").addFilter(_client_caused)  # once (a filter is added once)
    connection = type("Connection", (_Connection,), {"send_timeout": server.send_timeout,
                                                      "caps": connection_caps(server)})
    return uvicorn.Config(
        # No WebSocket protocol (see above): a handshake reaches _Connection as a request.
        app, host=host.strip("[]"), port=int(port), http=connection, ws="none", lifespan="on",
        # No access log: callback and authorize URLs carry codes and state.
        access_log=False, log_config=None, log_level=logging.WARNING,
        # Only the site decides whom to believe about a client's address (trusted_proxies).
        proxy_headers=False, server_header=False,
        # uvicorn's annotations say int; its timers take seconds as floats.
        timeout_keep_alive=server.keep_alive_timeout, timeout_graceful_shutdown=GRACE)  # type: ignore[arg-type]


# uvicorn's error line for an answer the app left unfinished: the forwarder
# does so on purpose when a backend's answer breaks off (forward.py), so the
# client sees it cut short; one a request, were it not throttled.
_UNFINISHED = "ASGI callable returned without completing response."


class _ClientCaused(logging.Filter):
    """uvicorn's warnings (a malformed request, an unsupported upgrade), one
    per connection a client opens, and its line for an unfinished answer:
    through the same once-a-minute line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING or record.msg == _UNFINISHED:
            return _failed.filter(record)
        return True


_client_caused = _ClientCaused()


class _Connection(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 connection, with the limits above."""

    # When the request head awaited must have come by (loop time); None while none is.
    _head_due: float | None = None
    # The bytes of the request line, header and trailer lines parsed of the
    # request being read; of the reads since the parser last gave anything
    # (a line it holds, unfinished); whether it gave anything this read.
    _lines = 0
    _unparsed = 0
    _heard = False
    # Past the head of the request being read: what comes now is trailers.
    _trailing = False
    # At most one timer per connection, moved on lazily: not one made and
    # cancelled per request.
    _timer: asyncio.TimerHandle | None = None
    # Seconds the client may read nothing of its answers (uvicorn waits for
    # ever), the timer that holds it to them while writing is paused, and
    # the bytes held here for it when that timer was last set.
    send_timeout = 30.0
    _unread: asyncio.TimerHandle | None = None
    _unsent = 0
    # Whether the connection was dropped (too many requests ahead, a head
    # too large): the rest of the read is parsed, but no request of it runs.
    _dropped = False
    # The caps on connections held (a subclass's, per server); whether they
    # admitted this connection, and its address.
    caps: ConnectionCaps | None = None
    _admitted = False
    _peer: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The requests of this connection not yet forgotten: the one being
        # answered and those pipelined behind it.
        self._cycles: weakref.WeakSet[Any] = weakref.WeakSet()

    # As uvicorn's HttpToolsProtocol declares it (narrower than asyncio's BaseProtocol).
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        hold_little_unsent(transport.get_extra_info("socket"))
        self.transport = _ClosingTransport(transport, self.send_timeout, self.loop)  # type: ignore[assignment]
        # Writing pauses (and send_timeout starts) as soon as the kernel
        # takes no more, not once 64 KiB more wait here (asyncio's mark): a
        # client asking now and then, never reading, was held for minutes.
        transport.set_write_buffer_limits(high=0)
        if self.caps is not None:
            peer = _peer_address(transport.get_extra_info("peername"))
            if not self.caps.admit(peer):
                _failed("closed a connection past the cap on connections held")
                self._cut()
                return
            self._admitted, self._peer = True, peer
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._let_go()
        self._head_due = None
        for timer in (self._timer, self._unread):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)
        # uvicorn tells only the request parsed last that its client is
        # gone; the one being answered, when others were pipelined behind
        # it, went on to write to the closed transport (a traceback each).
        for cycle in self._cycles:
            if not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()

    def _let_go(self) -> None:
        if self._admitted and self.caps is not None:
            self._admitted = False
            self.caps.release(self._peer)

    def _cut(self) -> None:
        _cut(self.transport)

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to bytes that parse as no request: while an answer
        # is under way it would sit among that answer's bytes (or pass for
        # it, not yet begun), so the connection is cut instead.
        if self.cycle is not None and not self.cycle.response_complete:
            _failed("closed a connection whose client sent what parses as no request")
            self._cut()
        else:
            super().send_400_response(msg)

    def data_received(self, data: bytes) -> None:
        self._heard = False
        try:
            super().data_received(data)
        except Exception as error:  # noqa: BLE001 - this connection's failure: it is closed, the server goes on
            _failed("closed a connection on a protocol error (%s)", _names(error))
            self.transport.close()
            return
        # What came after the parser last gave anything this read is not
        # counted: a line held unfinished past the bound is caught a read later.
        self._unparsed = 0 if self._heard else self._unparsed + len(data)
        if self._unparsed > MAX_HEAD:
            self._too_large()

    # on_url and on_header are uvicorn's, with the bound counted: called for
    # every header of every request, they do it in one call, not three.
    def on_url(self, url: bytes) -> None:
        self.url += url
        self._heard = True
        self._lines += len(url)
        if self._lines > MAX_HEAD:
            self._too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._heard = True
        self._lines += len(name) + len(value) + 3  # ":" and CRLF (the space is optional)
        if self._lines > MAX_HEAD:
            self._too_large()
        if self._trailing:
            # A trailer is counted and dropped (RFC 9110 §6.5.1: a recipient
            # may discard them): uvicorn added them to the request's headers,
            # which the Host check, the guard and the app had read before them.
            return
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def _too_large(self) -> None:
        if self._dropped:
            return
        self._dropped = True
        _failed("closed a connection whose request head or trailers went past %d bytes", MAX_HEAD)
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                                 b"content-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()
        else:  # an answer is under way: nothing may be written between its bytes
            self._cut()

    def on_headers_complete(self) -> None:
        self._head_due = None
        # The trailers, if any, get a bound of their own, as under h11.
        self._heard, self._lines, self._trailing = True, 0, True
        if self._dropped:
            return  # the rest of the read, parsed after the connection was dropped
        if len(self.pipeline) >= MAX_PIPELINED:
            # uvicorn queues every request a read brings, however many are
            # ahead of their answers, and reads on after each answer: one
            # connection that sent without reading took gigabytes.
            self._dropped = True
            _failed("closed a connection with more than %d requests ahead of their answers", MAX_PIPELINED)
            self._cut()  # its unread answers are not flushed first
            return
        # Any upgrade: none is spoken (a WebSocket handshake is refused below).
        upgrade = self.parser.should_upgrade()
        refusal = None
        if not one_valid_host(self.headers, self.parser.get_http_version()):
            refusal = _bad_host
        elif upgrade and asks_for_websocket(self.headers):
            refusal = _no_websocket
        elif upgrade and declares_body(self.headers):
            refusal = _upgrade_with_body
        elif self.url[:1] != b"/" and not host_of_target(self.url, self.headers):
            refusal = _bad_target
        if refusal is None:
            super().on_headers_complete()
        else:
            # Answered in its turn among those pipelined ahead of it, by an
            # app of its own; "connection: close" ends the connection after.
            app, self.app = self.app, refusal
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        self._cycles.add(self.cycle)
        if upgrade:  # httptools dropped what came after its head: the connection ends with its answer
            self.cycle.keep_alive = False

    def on_body(self, body: bytes) -> None:
        self._heard = True
        if not self._dropped:
            super().on_body(body)

    def on_message_complete(self) -> None:
        # The next request's head is counted from nothing (and is no trailer).
        self._heard, self._lines, self._trailing = True, 0, False
        if not self._dropped:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        if not self.pipeline and self.cycle.more_body:
            # The answer is out, the request's body is not all in: the rest is not read.
            self.transport.close()
        super().on_response_complete()
        if self.pipeline:
            self.flow.pause_reading()  # nothing more is read while requests wait their turn
        if self.timeout_keep_alive_task is not None:  # uvicorn waits for the next request
            self._await_head()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._unread is None:
            self._unsent = self.transport.get_write_buffer_size()
            self._unread = self.loop.call_later(self.send_timeout, self._answers_unread)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._unread is not None:
            self._unread.cancel()
            self._unread = None

    def _answers_unread(self) -> None:
        # send_timeout is the most a client may take nothing: one reading
        # steadily gets its clock started again (a single large write took
        # longer than send_timeout to drain at 16 KiB/s).
        unsent = self.transport.get_write_buffer_size()
        if unsent < self._unsent:
            self._unsent = unsent
            self._unread = self.loop.call_later(self.send_timeout, self._answers_unread)
            return
        self._unread = None
        _left_unread(self.send_timeout)
        self._cut()  # close() would wait to send what the client does not read

    def _await_head(self) -> None:
        self._head_due = self.loop.time() + self.timeout_keep_alive
        if self._timer is None:
            self._timer = self.loop.call_at(self._head_due, self._head_overdue)

    def _head_overdue(self) -> None:
        self._timer = None
        if self._head_due is None:
            return  # it came; the next wait starts a timer
        if self.loop.time() < self._head_due:  # a later wait
            self._timer = self.loop.call_at(self._head_due, self._head_overdue)
        elif self.transport.get_write_buffer_size():
            # Its last answer still going out (writing is paused, so
            # send_timeout judges whether the client reads): not idle yet.
            self._await_head()
        else:
            self.transport.close()


# -- Hypercorn ------------------------------------------------------------------------


class _HypercornConfig(HypercornConfig):
    send_timeout: float  # ours: _HypercornConnection.protocol_send
    caps: ConnectionCaps  # ours: _HypercornConnection.run


def hypercorn_config(server: ServerConfig) -> HypercornConfig:
    hyper = _HypercornConfig()
    hyper.bind = [server.listen]
    # No access log: callback and authorize URLs carry codes and state.
    hyper.accesslog = None
    hyper.include_server_header = False
    hyper.errorlog = logging.getLogger("hypercorn.error")  # through our handler, once
    # An idle connection, and one whose request head has not all come
    # (the timer runs from the connection's start or its last answer), is closed.
    hyper.keep_alive_timeout = server.keep_alive_timeout
    hyper.graceful_timeout = GRACE
    hyper.send_timeout = server.send_timeout  # ours: _HypercornConnection.protocol_send
    hyper.caps = connection_caps(server)  # ours: _HypercornConnection.run
    logging.getLogger("hypercorn.error").addFilter(_client_caused_errors)  # once
    return hyper


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


class _ClientCausedErrors(logging.Filter):
    """Hypercorn logs a traceback per request whose client broke the
    protocol under the app's feet (bytes after a refused WebSocket
    handshake, a close after ``100 Continue``): "Error in ASGI Framework",
    with the failure of the app's next send. Those are one short line at
    most once a minute, here; any other failure keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "Error in ASGI Framework" or not record.exc_info or record.exc_info[1] is None:
            return True
        error = record.exc_info[1]
        if not all(isinstance(leaf, _CLIENT_CAUSED) for leaf in _leaves(error)):
            return True
        record.msg, record.args = "a request ended when its client broke the protocol (%s)", (_names(error),)
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return _failed.filter(record)


_client_caused_errors = _ClientCausedErrors()


def _names(error: BaseException) -> str:
    # The types only: a message can quote the request (its URL, a token).
    if isinstance(error, BaseExceptionGroup):
        return ", ".join(_names(inner) for inner in error.exceptions)
    return type(error).__name__


class _HypercornConnection:
    """Put before Hypercorn's TCPServer (of either loop): the changes above."""

    # Hypercorn's TCPServer's, which differ between the loops (and its run,
    # _read_data and protocol_send, which super() reaches past object).
    stream: Any  # trio's; asyncio's has a reader and a writer
    writer: Any
    config: Any
    send_lock: Any
    protocol: Any
    idle_task: Any

    async def run(self) -> None:
        caps: ConnectionCaps | None = getattr(self.config, "caps", None)
        try:
            peer = _peer_address(self.stream.socket.getpeername() if hasattr(self, "stream")
                                 else self.writer.get_extra_info("peername"))
        except OSError:  # gone already: counted in all only, for the moment it lasts
            peer = None
        if caps is not None and not caps.admit(peer):
            _failed("closed a connection past the cap on connections held")
            await self._abort()
            return
        self._held = (caps, peer) if caps is not None else None
        hold_little_unsent(self._socket())
        try:
            await super().run()  # type: ignore[misc]
        except _EndConnection:
            pass  # a client that spoke HTTP/2, or named no valid host: its connection is closed, as said
        except Exception as error:  # noqa: BLE001 - cancellation passes; anything else was this connection's
            _failed("closed a connection on a protocol error (%s)", _names(error))
        finally:
            self._let_go()

    # The caps and address that admitted this connection, until its socket closes.
    _held: tuple[ConnectionCaps, str | None] | None = None

    def _let_go(self) -> None:
        """Its place under the caps, given back once: when its socket closes.
        Its task may outlive the socket (Hypercorn's, waiting on a stream a
        pipelined request left behind, a third review saw): the place is the
        descriptor's, not the task's."""
        held, self._held = self._held, None
        if held is not None:
            held[0].release(held[1])

    def _socket(self) -> Any:
        return self.stream.socket if hasattr(self, "stream") else self.writer.get_extra_info("socket")

    async def _close(self) -> None:
        try:
            if await self._lingered():
                await super()._close()  # type: ignore[misc]
            else:
                await self._abort()
        finally:
            self._let_go()

    async def _initiate_server_close(self) -> None:
        # Closing while idle: what the client sends from now on is no request
        # (its reading goes on while the close lingers).
        self.protocol = _Deaf(self.protocol)
        try:
            if await self._lingered():
                await super()._initiate_server_close()  # type: ignore[misc]
            else:
                from hypercorn.events import Closed

                await self.protocol.handle(Closed())
                await self._abort()
        finally:
            self._let_go()

    async def _lingered(self) -> bool:
        """Whether the client took all the kernel holds for it before it
        took none of it for ``send_timeout`` (then it is reset): as
        _ClosingTransport, a close waits for that."""
        try:
            sock = self._socket()
        except (OSError, AttributeError):
            return True
        taking = _Taking(self.config.send_timeout)
        context = getattr(self, "context", None)
        while left := unacknowledged(sock):
            if context is not None and context.terminated.is_set():
                return False  # the server is stopping: Hypercorn shields this wait from its own deadline
            if taking.stalled(left, anyio.current_time()):
                _left_unread(self.config.send_timeout)
                return False
            await anyio.sleep(LINGER_POLL)
        return True

    async def _read_data(self) -> None:
        await super()._read_data()  # type: ignore[misc]
        # The client has gone: its idle timer need not hold the connection open.
        await self.idle_task.stop()

    async def protocol_send(self, event: Any) -> None:
        """Hypercorn's, but bytes the client leaves unread for
        ``send_timeout`` seconds end the connection (Hypercorn waited for
        ever)."""
        from hypercorn.events import Closed, RawData

        if not isinstance(event, RawData):
            await super().protocol_send(event)  # type: ignore[misc]
            return
        async with self.send_lock:
            try:
                sent = await self._send_raw(event.data, self.config.send_timeout)
            except (*_BROKEN_STREAM, ConnectionError, RuntimeError):
                sent = False
            else:
                if sent:
                    return
                _left_unread(self.config.send_timeout)
                await self._abort()
        await self.protocol.handle(Closed())

    async def _send_raw(self, data: bytes, timeout: float) -> bool:
        """Whether ``data`` went out within ``timeout`` seconds. Shielded, as
        Hypercorn's own send is: an app cancelling its own work must not cut
        bytes off mid-write; only this deadline may. (One scope of the
        loop's own: anyio's two cost trio 100 us a request.)"""
        if hasattr(self, "stream"):  # trio
            # In pieces, each with its own deadline: a client reading
            # steadily, at 16 KiB per send_timeout or faster, is never cut
            # off mid-answer.
            view = memoryview(data)
            for start in range(0, max(len(view), 1), _SEND_PIECE):
                with trio.CancelScope(shield=True, deadline=trio.current_time() + timeout) as scope:
                    await self.stream.send_all(view[start:start + _SEND_PIECE])
                if scope.cancelled_caught:
                    return False
            return True
        self.writer.write(data)  # asyncio
        try:
            await asyncio.shield(asyncio.wait_for(self.writer.drain(), timeout))
        except asyncio.TimeoutError:
            return False
        return True

    async def _abort(self) -> None:
        try:
            reset_on_close(self._socket())
            if hasattr(self, "stream"):
                await trio.aclose_forcefully(self.stream)
            else:
                self.writer.transport.abort()
        finally:
            self._let_go()


# Bytes a client must take within send_timeout (serve --trio): what the
# kernel holds unsent for it.
_SEND_PIECE = UNSENT_LOWAT


class _Deaf:
    """A Hypercorn connection's protocol, but deaf to the client's bytes."""

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    async def handle(self, event: Any) -> None:
        from hypercorn.events import RawData

        if not isinstance(event, RawData):
            await self._protocol.handle(event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._protocol, name)


class _EndConnection(Exception):
    """The connection is closed (its client told why where it can be)."""


def _http1_only(h11_protocol: type[Any]) -> type[Any]:
    """Hypercorn's HTTP/1.1 protocol, minus its ways into HTTP/2. Hypercorn's
    HTTP/2 held a connection whose client set a zero flow-control window
    for ever, kept connections its clients had left (their descriptors, on
    trio), buffered a forwarded stream without bound when the client never
    opened its window, and leaked extended CONNECTs on trio: serve speaks
    HTTP/1.1 alone, as it does on uvicorn. An ``Upgrade: h2c`` is ignored
    (RFC 9113 §3.1 drops that upgrade; the request is answered in HTTP/1.1);
    the HTTP/2 preface ends the connection. So does a Host no URI could
    hold, after a 400 (h11 refuses a missing or repeated Host itself), and a
    head past MAX_HEAD that came whole, after a 431. An absolute target is
    served at its host (RFC 9112 §3.2.2), as on uvicorn; one no origin
    server reads ends the connection after a 400."""

    class HTTP1Only(h11_protocol):  # type: ignore[misc]  # a base given at run time
        async def _check_protocol(self, event: Any) -> None:
            if event.method == b"PRI" and event.target == b"*":
                raise _EndConnection()
            if not one_valid_host(list(event.headers), event.http_version.decode("ascii")):
                await self._send_error_response(400)
                raise _EndConnection()
            # h11 bounds a head still incomplete; one that came whole in a read is held to it here.
            if len(event.target) + sum(len(name) + len(value) + 3 for name, value in event.headers) > MAX_HEAD:
                await self._send_error_response(431)
                raise _EndConnection()

        async def _create_stream(self, request: Any) -> None:
            if asks_for_websocket(request.headers):  # refused here, never a WebSocket stream (see above)
                await self._send_error_response(403)
                raise _EndConnection()
            if request.target[:1] != b"/" and request.target != b"*":
                headers = list(request.headers)
                if not host_of_target(request.target, headers):
                    await self._send_error_response(400)
                    raise _EndConnection()
                request = h11.Request(method=request.method, target=origin_form(request.target), headers=headers,
                                      http_version=request.http_version)
            await super()._create_stream(request)

    return HTTP1Only


def harden_connections() -> None:
    """Install the changes above for both of Hypercorn's loops (again is harmless)."""
    from hypercorn import protocol
    from hypercorn.asyncio import run as on_asyncio
    from hypercorn.trio import run as on_trio

    # Hypercorn's modules import TCPServer and H11Protocol without re-exporting
    # them (so its types do not show them); they are replaced where looked up.
    for module in (on_asyncio, on_trio):
        if not issubclass(module.TCPServer, _HypercornConnection):
            module.TCPServer = type("TCPServer", (_HypercornConnection, module.TCPServer), {})  # type: ignore[attr-defined]
    if protocol.H11Protocol.__name__ != "HTTP1Only":  # type: ignore[attr-defined]
        protocol.H11Protocol = _http1_only(protocol.H11Protocol)  # type: ignore[attr-defined]
