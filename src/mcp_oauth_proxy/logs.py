"""Logging set-up: plain text for people, or JSON lines for log pipelines;
and :class:`Throttled`, for what a client can cause as often as it likes.

Audit events (runtime.log_audit) carry their fields in ``record.audit``,
access lines (adapters/access_log.py) in ``record.access``; the JSON
formatter puts them at the top level of the line."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

# Loggers that would write request URLs (query strings included): the HTTP
# client logs each request it sends at INFO. Our access log
# (adapters/access_log.py) writes query values' lengths only.
_URL_LOGGERS = ("httpx", "httpcore")


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "audit", None) or getattr(record, "access", None)
        if isinstance(fields, dict):
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), default=str)


def configure_logging(level: str = "info", json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _URL_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class Throttled:
    """A log line at most once per ``interval`` seconds; the next one that
    is written counts those held back (so a flood is one line a minute,
    not one per attempt)."""

    def __init__(self, logger: logging.Logger, level: int, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.level = level
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()  # store failures are logged from worker threads
        self._next = float("-inf")
        self._held = 0

    def __call__(self, message: str, *args: Any) -> None:
        held = self._admit()
        if held is not None:
            self.logger.log(self.level, message + _more(held), *args)

    def filter(self, record: logging.LogRecord) -> bool:
        """As a logging filter, for lines another library writes: the same
        rule (and the same count, shared with this object's own lines)."""
        held = self._admit()
        if held is None:
            return False
        record.msg = str(record.msg) + _more(held)
        return True

    def _admit(self) -> int | None:
        """None if a line may not be written now (it is counted), else how
        many were held back since the last one."""
        with self._lock:
            now = self._clock()
            if now < self._next:
                self._held += 1
                return None
            self._next = now + self.interval
            held, self._held = self._held, 0
        return held


def _more(held: int) -> str:
    return f" (and {held} more like it since the last such line)" if held else ""
