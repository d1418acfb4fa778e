"""Running the served app on Hypercorn (asyncio or trio): its settings from
``[server]``, and two changes to how it runs a connection.

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
that connection only, and says so in one short line, at most once a minute.
"""

from __future__ import annotations

import logging
import sys

from hypercorn.config import Config as HypercornConfig

from .config import ServerConfig
from .logs import Throttled

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

log = logging.getLogger("mcp_oauth_proxy")
_failed = Throttled(log, logging.INFO, interval=60.0)


def hypercorn_config(server: ServerConfig) -> HypercornConfig:
    hyper = HypercornConfig()
    hyper.bind = [server.listen]
    # No access log: callback and authorize URLs carry codes and state.
    hyper.accesslog = None
    hyper.include_server_header = False
    hyper.errorlog = logging.getLogger("hypercorn.error")  # through our handler, once
    # An idle connection, and one whose request head has not all come
    # (the timer runs from the connection's start or its last answer), is closed.
    hyper.keep_alive_timeout = server.keep_alive_timeout
    return hyper


def _names(error: BaseException) -> str:
    # The types only: a message can quote the request (its URL, a token).
    if isinstance(error, BaseExceptionGroup):
        return ", ".join(_names(inner) for inner in error.exceptions)
    return type(error).__name__


class _Connection:
    """Put before Hypercorn's TCPServer (of either loop): the changes above."""

    async def run(self) -> None:
        try:
            await super().run()  # type: ignore[misc]
        except Exception as error:  # cancellation passes; anything else was this connection's
            _failed("closed a connection on a protocol error (%s)", _names(error))

    async def _read_data(self) -> None:
        await super()._read_data()  # type: ignore[misc]
        # The client has gone: its idle timer need not hold the connection open.
        await self.idle_task.stop()  # type: ignore[attr-defined]


def harden_connections() -> None:
    """Install the changes above for both of Hypercorn's loops (again is harmless)."""
    from hypercorn.asyncio import run as on_asyncio
    from hypercorn.trio import run as on_trio

    for module in (on_asyncio, on_trio):
        if not issubclass(module.TCPServer, _Connection):
            module.TCPServer = type("TCPServer", (_Connection, module.TCPServer), {})
