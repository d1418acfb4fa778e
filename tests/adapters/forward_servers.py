"""Processes for the forwarding tests: the backend MCP server
(``forward_backend.py``) and ``mcp-oauth-proxy serve`` in front of it, each on
a free loopback port, waited for with deadlines and stopped with SIGTERM."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Mapping

import httpx

BACKEND_SCRIPT = Path(__file__).with_name("forward_backend.py")
DEADLINE = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else ""


def wait_until(check: Callable[[], bool], what: str, proc: subprocess.Popen, log: Path,
               deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > end:
            raise RuntimeError(f"{what} was not ready after {deadline:.0f}s:\n{tail(log)}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)


def start(cmd: list[str], log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=log.parent,
                                env={**os.environ, **(env or {})})


def start_backend(port: int, log: Path) -> subprocess.Popen:
    proc = start([sys.executable, str(BACKEND_SCRIPT), str(port)], log)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/control/seen", trust_env=False, timeout=2)
                   .status_code == 200, "the backend MCP server", proc, log)
    except BaseException:
        stop(proc)
        raise
    return proc


def start_proxy(config: Path, base: str, log: Path, env: Mapping[str, str], trio: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mcp_oauth_proxy.cli", "serve", "--config", str(config)]
    proc = start(cmd + (["--trio"] if trio else []), log, env)
    try:
        wait_until(lambda: httpx.get(f"{base}/.well-known/oauth-authorization-server", trust_env=False, timeout=2)
                   .status_code == 200, "mcp-oauth-proxy serve", proc, log)
    except BaseException:
        stop(proc)
        raise
    return proc
