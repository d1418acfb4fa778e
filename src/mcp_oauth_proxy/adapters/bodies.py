"""Request bodies at the edge of the served app (:class:`RequestBodies`):
each must arrive in time, and what an app leaves unread is drained once
its answer is out.

Why the draining: an ASGI server hands the body to the app through a
bounded queue (Hypercorn: ``max_app_queue_size`` messages, 10). An app that
answers without reading the body (a 401, 404, 405, 413, ...) leaves the
queue full behind a body of many small chunks: the server's reader blocks
putting the next chunk into it, and the "disconnect" the server puts there
once the answer is complete blocks too. The connection then never answers
again, and never closes, even after the client has gone (CLOSE-WAIT, one
file descriptor each). Here, before the last (empty) part of such an answer
goes out, the rest of the body is read and dropped, for up to ``LINGER``
seconds: a short body ends, and the connection carries the next request.
A body still coming after that is dropped while the last part goes out,
after which the server closes the connection (its request unfinished).

Why the deadline: a client that never finishes its body would otherwise
hold its connection for ever. Time spent waiting for the body is counted;
past ``timeout`` seconds the app is told the client has gone, and a request
left unanswered is answered 408.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, MutableMapping
from typing import Any

import anyio
import sniffio

from ..core.http import Response, json_response
from .asgi import ASGIApp, Receive, Scope, Send, send_response

Message = MutableMapping[str, Any]
# Seconds the rest of an unread body is waited for, after the answer.
LINGER = 1.0
# asyncio's own deadline (Python 3.11 on), where there is one.
_asyncio_timeout = getattr(asyncio, "timeout", None)


class RequestBodies:
    """Wraps an ASGI app; HTTP requests to it get the deadline (``timeout``
    seconds, None for none) and the draining described above."""

    def __init__(self, app: ASGIApp, timeout: float | None = None) -> None:
        self.app = app
        self.timeout = math.inf if timeout is None else timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _may_have_body(scope):
            # Nothing to wait for nor to drain (most requests: a GET, an SSE stream).
            return await self.app(scope, receive, send)
        exchange = _Exchange(receive, send, self.timeout)
        await self.app(scope, exchange.receive, exchange.send)
        if not exchange.answered and not exchange.body_done:
            # Returned without a word, the body unread (or late): the server's
            # own 500 would wait on the queue just as an answer of the app's would.
            await send_response(exchange.send, _timed_out() if exchange.timed_out else _no_answer())


def _may_have_body(scope: Scope) -> bool:
    # An HTTP/2 request need not say that it has a body.
    return scope.get("http_version") not in ("1.0", "1.1") or declares_body(scope.get("headers", ()))


def declares_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """RFC 9112 §6.3: whether an HTTP/1.x request's head says it has a body."""
    for name, value in headers:
        name = name.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class _Exchange:
    """One request's receive and send, as the app sees them."""

    __slots__ = ("_receive", "_send", "answered", "body_done", "budget", "timed_out")

    def __init__(self, receive: Receive, send: Send, budget: float) -> None:
        self._receive = receive
        self._send = send
        self.budget = budget  # seconds the client may yet keep us waiting for its body
        # Nothing more to wait for: the body's end (or the client's leaving) was received.
        self.body_done = False
        self.timed_out = False
        self.answered = False

    async def receive(self) -> Message:
        if self.body_done:
            return await self._receive()  # the server's disconnect, whenever it comes
        if self.timed_out:
            return {"type": "http.disconnect"}
        try:
            message = await self._within_budget()
        except TimeoutError:
            self.timed_out = True
            return {"type": "http.disconnect"}
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            self.body_done = True
        return message

    async def _within_budget(self) -> Message:
        """The next message, the time waited for it taken from the budget;
        TimeoutError once the budget is spent. On asyncio with a deadline of
        the loop's own: anyio's cancel scope cost a forwarded request some
        5 % of the server's instructions."""
        if _asyncio_timeout is None or sniffio.current_async_library() != "asyncio":
            started = anyio.current_time()
            try:
                with anyio.fail_after(self.budget):
                    return await self._receive()
            finally:
                self.budget -= anyio.current_time() - started
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with _asyncio_timeout(None if self.budget == math.inf else self.budget):
                return await self._receive()
        finally:
            self.budget -= loop.time() - started

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.answered = True
        elif message["type"] == "http.response.body" and not message.get("more_body", False) and not self.body_done:
            return await self._finish(message)
        await self._send(message)

    async def _finish(self, last: Message) -> None:
        """The answer's last part, the body not read to its end."""
        if last.get("body"):
            # The client has the whole answer now, whatever its body does next.
            await self._send({"type": "http.response.body", "body": last["body"], "more_body": True})
        with anyio.move_on_after(LINGER):
            while not (self.body_done or self.timed_out):
                await self.receive()
        end = {"type": "http.response.body", "body": b""}
        if self.body_done:
            return await self._send(end)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._drop_rest)
            await self._send(end)
            tasks.cancel_scope.cancel()

    async def _drop_rest(self) -> None:
        # Past the body's end the server puts only its disconnect, which never waits.
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                return


def _timed_out() -> Response:
    # RFC 9110 §15.5.9. No "Connection: close" (HTTP/2 forbids the field):
    # the server closes an HTTP/1.1 connection whose request is unfinished.
    return json_response({"error": "invalid_request", "error_description": "the request body did not arrive in time"},
                         408)


def _no_answer() -> Response:
    return json_response({"error": "server_error", "error_description": "an unexpected error occurred"}, 500)
