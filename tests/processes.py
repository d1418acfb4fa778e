"""Servers the tests start as processes on 127.0.0.1: a free port to give
one, waiting with a deadline until it is ready, the end of its log when it
is not, and stopping it with SIGTERM (SIGKILL after a grace period)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Callable

import httpx


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (for servers that must
    know their own URL before they start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], bool], deadline: float, what: str, proc: subprocess.Popen | None = None,
               log: Path | None = None) -> None:
    """Poll ``check`` until it is true, the process died, or the deadline passed."""
    end = time.monotonic() + deadline
    delay = 0.02
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready:\n{tail(log)}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        if time.monotonic() > end:
            raise RuntimeError(f"{what} was not ready after {deadline:.0f}s:\n{tail(log)}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def tail(log: Path | None, limit: int = 4000) -> str:
    if log is None or not log.exists():
        return ""
    return log.read_text(errors="replace")[-limit:]


def stop_process(proc: subprocess.Popen, grace: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)
