"""Forwarding benchmark: an MCP tools/call through ``serve``, against the same
call made straight to the backend.

    python bench/bench_forward.py [--duration 5] [--rounds 3] [--connections 1,32]
                                  [--answers json,sse] [--no-pin] [--trio]

The backend is a real MCP server (the ``mcp`` SDK's ``MCPServer``, one tool,
``add``, streamable HTTP on uvicorn) in its own process; ``serve`` (the
``mcp-oauth-proxy serve`` command, default server) forwards its tenant's
``/mcp`` there. Both are pinned to core 0, wrk to core 1 (with two cores
or more). One MCP session is opened straight at the backend and shared by
every request, direct or forwarded (the proxy passes ``Mcp-Session-Id`` on).

Beside them, ``relayed``: the same call through a relay that parses
nothing (each client connection gets a backend connection of its own, the
bytes copied both ways on uvloop), pinned with the backend as ``serve``
is. No forwarder that reads HTTP can cost less, in Python or in C, than
the two extra socket hops this one costs: relayed/direct is the ceiling
of forwarded/direct on this machine, measured beside it.

Per answer kind (``json``: the backend answers ``application/json``;
``sse``: a Server-Sent Events stream of one event) and per number of
connections, rounds alternate (direct, forwarded); each prints the best
round of each and the per-round ratio forwarded/direct with its median
(the target: at least 0.85). wrk checks every answer: status 200 and a
result of ``5`` for add(2, 3); anything else is counted as wrong.

Needs ``wrk`` (``apt-get install -y wrk``) and ``taskset``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import cast

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from bench_guard import (TENANT, Result, cpu_seconds, free_port, issue, start_pinned, stop_server,  # noqa: E402
                         versions)

CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
database = "{database}"
key_file = "{keys}"

[[tenants]]
slug = "{tenant}"
issuer = "http://127.0.0.1:{port}"
resource = "http://127.0.0.1:{port}/mcp"
scopes = ["mcp"]
backend = "{backend}"

[tenants.upstream]
kind = "github"
client_id = "bench-upstream-client"
client_secret = "bench-upstream-secret"
"""

CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 2, "b": 3}}}
PROTOCOL = "2025-11-25"

# wrk: POST the call, each with an id of its own (the SDK answers requests of
# one session by id: a repeated id waits for ever), check each answer; every
# thread's count of wrong ones is summed in done() and printed on a line of
# its own.
LUA = """\
local counter = 0
function request()
  counter = counter + 1
  return wrk.format("POST", nil, nil, string.format({body}, counter))
end
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) wrong = 0 end
function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"text":"5"', 1, true) then wrong = wrong + 1 end
end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("wrong") end
  io.write("wrong answers: " .. total .. "\\n")
end
"""


def backend_main(port: int, answers: str) -> None:
    import uvicorn
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("bench")

    @server.tool()
    def add(a: int, b: int) -> int:
        """a + b"""
        return a + b

    app = server.streamable_http_app(streamable_http_path="/mcp", json_response=answers == "json")
    uvicorn.run(app, host="127.0.0.1", port=port, http="httptools", loop="uvloop", log_level="warning",
                access_log=False)


def relay_main(port: int, backend_port: int) -> None:
    """Copies bytes between each client connection and a backend connection
    of its own; parses nothing, checks nothing."""
    import asyncio

    import uvloop

    class ToBackend(asyncio.Protocol):
        def __init__(self, client: asyncio.Transport) -> None:
            self.client = client

        def data_received(self, data: bytes) -> None:
            self.client.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self.client.close()

    class FromClient(asyncio.Protocol):
        backend: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)
            self.early: list[bytes] = []  # what came before its backend connection was open
            asyncio.get_running_loop().create_task(self.connect())

        async def connect(self) -> None:
            loop = asyncio.get_running_loop()
            self.backend, _ = await loop.create_connection(lambda: ToBackend(self.transport), "127.0.0.1",
                                                           backend_port)
            self.backend.write(b"".join(self.early))

        def data_received(self, data: bytes) -> None:
            if self.backend is None:
                self.early.append(data)
            else:
                self.backend.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.backend is not None:
                self.backend.close()

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(FromClient, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


def start(cmd: list[str], log: Path, pin: bool, ready: str) -> subprocess.Popen:
    """``cmd`` pinned, once ``ready`` answers at all."""
    return start_pinned(cmd, log, pin, lambda: httpx.get(ready, timeout=1, trust_env=False) is not None)


def open_session(url: str) -> str:
    """An MCP session at the backend, initialized: its Mcp-Session-Id."""
    headers = {"accept": "application/json, text/event-stream", "mcp-protocol-version": PROTOCOL}
    hello = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
             "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                        "clientInfo": {"name": "bench", "version": "1"}}}
    with httpx.Client(trust_env=False, timeout=10) as http:
        answer = http.post(url, json=hello, headers=headers)
        answer.raise_for_status()
        session = answer.headers["mcp-session-id"]
        http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                  headers={**headers, "mcp-session-id": session}).raise_for_status()
    return session


def call_once(url: str, headers: dict[str, str]) -> None:
    """One call, checked here too, so a wrong setup fails loudly before wrk runs."""
    answer = httpx.post(url, content=json.dumps(CALL), headers=headers, timeout=10, trust_env=False)
    if answer.status_code != 200 or '"text":"5"' not in answer.text:
        raise SystemExit(f"{url}: {answer.status_code} {answer.text[:500]}")


def wrk_call(url: str, headers: dict[str, str], connections: int, duration: float, script: Path,
             pin: bool) -> Result:
    cmd = (["taskset", "-c", "1"] if pin else []) + ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s",
                                                     "--latency", "-s", str(script), url]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    seconds = re.search(r"requests in ([\d.]+)(m?s),", out)
    assert seconds is not None, out
    elapsed = float(seconds.group(1)) / (1000 if seconds.group(2) == "ms" else 1)
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    cuts = {int(p): float(v) * units[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", out, re.M)}
    wrong = int(re.search(r"wrong answers: (\d+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errors:
        wrong += sum(int(n) for n in errors.groups())
    return Result(requests, elapsed, (cuts[50], cuts[99]), wrong)


def measure(args: argparse.Namespace, answers: str, home: Path, pin: bool) -> list[str]:
    backend_port, port = free_port(), free_port()
    backend_url = f"http://127.0.0.1:{backend_port}/mcp"
    database, keys = f"sqlite:///{home / f'{answers}.db'}", str(home / f"{answers}.keys")
    config = home / f"{answers}.toml"
    config.write_text(CONFIG.format(port=port, database=database, keys=keys, tenant=TENANT, backend=backend_url))
    access, _ = issue(database, keys, port, 0)
    backend = start([sys.executable, __file__, "--backend", str(backend_port), "--answers", answers],
                    home / f"backend-{answers}.log", pin, f"http://127.0.0.1:{backend_port}/")
    proxy = relay = None
    relay_port = free_port()
    try:
        relay = start([sys.executable, __file__, "--relay", str(relay_port), str(backend_port)],
                      home / f"relay-{answers}.log", pin, f"http://127.0.0.1:{relay_port}/")
        proxy = start([sys.executable, "-m", "mcp_oauth_proxy.cli", "--log-level", "warning", "serve",
                       "--config", str(config)] + (["--trio"] if args.trio else []),
                      home / f"serve-{answers}.log", pin, f"http://127.0.0.1:{port}/")
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
                   "mcp-protocol-version": PROTOCOL, "mcp-session-id": open_session(backend_url),
                   "authorization": f"Bearer {access}"}
        script = home / "call.lua"
        template = json.dumps({**CALL, "id": 0}).replace('"id": 0', '"id": %d')
        script.write_text(LUA.format(body=json.dumps(template)))
        targets = {"direct": backend_url, "forwarded": f"http://127.0.0.1:{port}/mcp",
                   "relayed": f"http://127.0.0.1:{relay_port}/mcp"}
        for url in targets.values():
            call_once(url, headers)
            wrk_call(url, headers, 8, 1.0, script, pin)  # warm up
        lines = []
        for connections in args.connections:
            rounds: dict[str, list[Result]] = {name: [] for name in targets}
            for _ in range(args.rounds):
                for name, url in targets.items():
                    middle = {"forwarded": proxy, "relayed": relay}.get(name)
                    before = cpu_seconds(backend.pid), cpu_seconds(middle.pid) if middle else 0.0
                    result = wrk_call(url, headers, connections, args.duration, script, pin)
                    result.backend_us = (cpu_seconds(backend.pid) - before[0]) / result.requests * 1e6
                    # The CPU of what stands between: serve, or the relay.
                    result.serve_us = ((cpu_seconds(middle.pid) - before[1]) / result.requests * 1e6
                                       if middle else 0.0)
                    result.cpu_us = result.backend_us + result.serve_us
                    rounds[name].append(result)
            lines += table(answers, connections, rounds)
        return lines
    finally:
        for process in (proxy, relay):
            if process is not None:
                stop_server(process)
        stop_server(backend)


def table(answers: str, connections: int, rounds: dict[str, list[Result]]) -> list[str]:
    lines = []
    for name, results in rounds.items():
        best = max(results, key=lambda r: r.rate)
        wrong = sum(r.unexpected for r in results)
        lines.append(f"| {answers} | {connections} | {name} | {best.rate:,.0f} | {best.p50:.2f} | {best.p99:.2f} "
                     f"| {best.backend_us:,.0f} | {best.serve_us:,.0f} | {wrong} |")
    for name in ("forwarded", "relayed"):
        ratios = [f.rate / d.rate for d, f in zip(rounds["direct"], rounds[name])]
        cpu = [d.cpu_us / f.cpu_us for d, f in zip(rounds["direct"], rounds[name])]
        lines.append(f"| {answers} | {connections} | **{name}/direct** | per round "
                     f"{', '.join(f'{r:.3f}' for r in ratios)}; median **{statistics.median(ratios):.3f}** "
                     f"| | | CPU ratio {statistics.median(cpu):.3f} | | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=lambda s: [int(c) for c in s.split(",")], default=[1, 32])
    parser.add_argument("--answers", type=lambda s: s.split(","), default=["json", "sse"])
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--trio", action="store_true", help="serve --trio (Hypercorn, httpcore's pool)")
    parser.add_argument("--backend", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--relay", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.relay:
        return relay_main(*args.relay)
    if args.backend:
        return backend_main(args.backend, args.answers[0])
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    with tempfile.TemporaryDirectory() as tmp:
        lines = []
        for answers in args.answers:
            lines += measure(args, answers, Path(tmp), pin)
    from importlib.metadata import version

    print(f"machine: {os.cpu_count()} cores; " + ("backend and serve on core 0, wrk on core 1" if pin else "no pinning"))
    print(f"serve: {versions('hypercorn-trio' if args.trio else 'uvicorn')}; backend: mcp {version('mcp')} (MCPServer, streamable HTTP) on uvicorn; "
          f"{args.duration:g} s per round, {args.rounds} rounds")
    print("| answers | connections | case | req/s (best round) | p50 ms | p99 ms | backend CPU µs/req "
          "| serve (or relay) CPU µs/req | wrong |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
