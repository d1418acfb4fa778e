"""Processes for the forwarding tests: the backend MCP server
(``forward_backend.py``) and ``mcp-oauth-proxy serve`` in front of it, each on
a free loopback port, waited for with deadlines and stopped with SIGTERM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Mapping

import httpx
from processes import stop_process, wait_until

BACKEND_SCRIPT = Path(__file__).with_name("forward_backend.py")
DEADLINE = 30.0
GRACE = 10.0  # seconds from SIGTERM to SIGKILL


def start(cmd: list[str], log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=log.parent,
                                env={**os.environ, **(env or {})})


def start_backend(port: int, log: Path) -> subprocess.Popen:
    proc = start([sys.executable, str(BACKEND_SCRIPT), str(port)], log)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/control/seen", trust_env=False, timeout=2)
                   .status_code == 200, DEADLINE, "the backend MCP server", proc, log)
    except BaseException:
        stop_process(proc, GRACE)
        raise
    return proc


def start_proxy(config: Path, base: str, log: Path, env: Mapping[str, str], trio: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mcp_oauth_proxy.cli", "serve", "--config", str(config)]
    proc = start(cmd + (["--trio"] if trio else []), log, env)
    try:
        wait_until(lambda: httpx.get(f"{base}/.well-known/oauth-authorization-server", trust_env=False, timeout=2)
                   .status_code == 200, DEADLINE, "mcp-oauth-proxy serve", proc, log)
    except BaseException:
        stop_process(proc, GRACE)
        raise
    return proc
