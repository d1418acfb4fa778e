"""File descriptors, which every connection holds one of: as many as the
system lets this process have, and a short, rate-limited line (no
traceback) when they run out.

Running out is what a crowd of connections (legitimate or not) leads to.
The event loops then retry ``accept()`` every tenth of a second, and each
retry wrote an ERROR with a traceback: trio's listener about 5,000 lines a
minute; plain asyncio one traceback per attempt. A log that grows without
bound is a second outage.
"""

from __future__ import annotations

import logging

from .logs import Throttled

log = logging.getLogger("mcp_oauth_proxy")
_out = Throttled(log, logging.WARNING, interval=60.0)
# The loggers the event loops report a failed accept() on, and how.
_ACCEPT_FAILURES = {"asyncio": "socket.accept() out of system resource", "trio.serve_listeners": "accept returned"}


def raise_limit() -> None:
    """The soft limit on open files up to the hard one (unix)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass  # left as it was


class _AcceptFailures(logging.Filter):
    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def filter(self, record: logging.LogRecord) -> bool:
        if self.marker not in str(record.msg):
            return True
        _out("out of file descriptors: new connections wait until some close (the limit is %s)", _limit())
        return False


def _limit() -> str:
    try:
        import resource
    except ImportError:  # pragma: no cover
        return "unknown"
    return str(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def quiet_accept_failures() -> None:
    """The event loops' failed accept() through one line a minute (again is harmless)."""
    for name, marker in _ACCEPT_FAILURES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _AcceptFailures) for f in logger.filters):
            logger.addFilter(_AcceptFailures(marker))
