"""Guard benchmark: what the bearer guard costs a request, on loopback.

    python bench/bench_guard.py [--duration 5] [--rounds 3] [--connections 32] [--database URL]
                                [--servers uvicorn,hypercorn-trio,hypercorn] [--no-pin]

Starts the standalone server's app (``app.build_app``) with a trivial
backend that answers ``200 ok``, in its own process, run exactly as
``mcp-oauth-proxy serve`` runs it (``cli.run_server``: uvicorn by default;
``hypercorn-trio`` is ``serve --trio``, ``hypercorn`` what ``serve`` ran
on before), and measures, case after case:

  (a) GET /mcp with a valid token: the guard, then the trivial backend;
  (b) GET /bare: the same trivial app, no guard, nor anything else of ours
      (same process): the server's own limit;
  (c) GET /mcp with no token: the guard's 401;
  (e) GET /floor with the token: the trivial app behind the least a guard
      can do in Python (one dict lookup of the Authorization header, a
      copy of the scope): the ceiling of (a)/(b) for any guard on this
      server, measured beside it;
  (d1) refresh-token grants at POST /oauth/token, one after another on one
       family (chain of rotated refresh tokens);
  (dN) the same with N families (one per connection) at once.

With two cores or more the server runs on core 0 and the load generator on
core 1 (``taskset``), so neither takes the other's time.

It prints, per server, each case's best round (requests/s, latency, the
server's CPU time per request), then (a)/(b) and (c)/(b) of each round,
(a) and (c) measured right after or before their (b), with their medians
(the target: (a)/(b) at least 0.95, (c)/(b) at least 0.8), and the same
ratios of CPU time per request, which move less with whatever else the
machine is doing. With several servers, the last lines compare each
server's (a) and (c) with the first one's.

Needs: ``wrk`` (``apt-get install -y wrk``) for (a)-(c), or
``--generator python`` for an httpx load generator instead; (d1) and (dN)
always use httpx, since each request carries the token the previous one got.
Both generators run in this process, apart from the server.

Store: SQLite in a temporary directory by default; ``--database URL`` picks
another (PostgreSQL runs in a schema of its own, dropped afterwards).
Tokens are written straight into the store before the server starts.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx

TENANT = "bench"
CLIENT_ID = "mcp_client_bench"
CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
database = "{database}"
key_file = "{keys}"
token_cache_seconds = {token_cache}

[[tenants]]
slug = "{tenant}"
issuer = "http://127.0.0.1:{port}"
resource = "http://127.0.0.1:{port}/mcp"
scopes = ["mcp"]

# No token-endpoint rate limit: (d1), (dN) measure the grant itself.
[tenants.rate_limits.token]
per_address = 0
per_client = 0
per_grant = 0

[tenants.upstream]
kind = "github"
client_id = "bench-upstream-client"
client_secret = "bench-upstream-secret"
"""


# -- the server process -------------------------------------------------------------


async def trivial(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """200 ok; answers the lifespan too, as the backend owns it."""
    if scope["type"] == "lifespan":
        while True:
            kind = (await receive())["type"].rsplit(".", 1)[-1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


class FloorGuard:
    """The least a bearer guard can do: the Authorization header's value
    looked up in a dict, the scope copied with what it found; else a 401."""

    def __init__(self, token: str) -> None:
        self.known = {f"Bearer {token}".encode(): "someone"}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                who = self.known.get(value)
                if who is not None:
                    return await trivial({**scope, "principal": who}, receive, send)
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"www-authenticate", b"Bearer"), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


class WithBare:
    """The served app, and /bare beside it: the trivial app alone; /floor:
    the trivial app behind :class:`FloorGuard`."""

    def __init__(self, guarded: Any, floor: FloorGuard) -> None:
        self.guarded = guarded
        self.floor = floor
        self.site = guarded.site  # for the housekeeping beside the server

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if scope["path"] == "/bare":
                return await trivial(scope, receive, send)
            if scope["path"] == "/floor":
                return await self.floor(scope, receive, send)
        return await self.guarded(scope, receive, send)


def serve(config_path: str, on: str) -> None:
    from mcp_oauth_proxy import config as config_mod
    from mcp_oauth_proxy.app import build_app
    from mcp_oauth_proxy.cli import run_server

    config = config_mod.load(config_path)
    if on.endswith(WITHOUT_METRICS):
        # The same server with the guard's counting turned off: what
        # counting metrics costs, measured beside the real one.
        from mcp_oauth_proxy import metrics

        metrics.guard_decision = lambda *a: None  # type: ignore[assignment]
        metrics.cache_lookup = lambda *a: None  # type: ignore[assignment]
        on = on[:-len(WITHOUT_METRICS)]
    floor = FloorGuard(floor_token_file(config_path).read_text())
    run_server(WithBare(build_app(config, backend=trivial), floor), config, on)


def floor_token_file(config_path: str | Path) -> Path:
    """Where the access token (d) uses is written for the server's FloorGuard."""
    return Path(config_path).with_name("floor-token")


# A server name's suffix: that server, its guard's metrics not counted.
WITHOUT_METRICS = "-without-metrics"


# -- tokens, written into the store ---------------------------------------------------


def issue(database: str, keys: str, port: int, chains: int) -> tuple[str, list[str]]:
    """(an access token, one refresh token per chain)."""
    from mcp_oauth_proxy.core.models import AccessToken, Client, CodeGrant, Grant, RefreshToken, UpstreamTokens
    from mcp_oauth_proxy.storage.keys import load_or_create_keyring
    from mcp_oauth_proxy.storage.open import open_store

    keyring, _ = load_or_create_keyring(keys)
    store = open_store(database, keyring)
    now = int(time.time())
    resource = f"http://127.0.0.1:{port}/mcp"
    store.save_client(Client(tenant=TENANT, client_id=CLIENT_ID, redirect_uris=("http://127.0.0.1/cb",),
                             token_endpoint_auth_method="none", grant_types=("authorization_code", "refresh_token"),
                             response_types=("code",), application_type="native", created_at=now))
    access_tokens, refresh_tokens = [], []
    for i in range(chains + 1):
        grant_id, code_hash = f"bench-grant-{i}", f"bench-code-{i}"
        common = dict(tenant=TENANT, grant_id=grant_id, client_id=CLIENT_ID, user_id=f"user-{i}", scope=("mcp",),
                      resource=resource)
        store.save_grant_and_code(
            Grant(code_hash=code_hash, claims={}, upstream=UpstreamTokens("upstream-at"), created_at=now,
                  expires_at=now + 86400, **common),  # type: ignore[arg-type]
            CodeGrant(tenant=TENANT, code_hash=code_hash, grant_id=grant_id, client_id=CLIENT_ID,
                      user_id=f"user-{i}", redirect_uri="http://127.0.0.1/cb", redirect_uri_given=False,
                      code_challenge="c" * 43, scope=("mcp",), resource=resource, expires_at=now + 60))
        at, rt = "mcp_at_" + secrets.token_urlsafe(32), "mcp_rt_" + secrets.token_urlsafe(32)
        store.redeem_code(
            TENANT, code_hash, now,
            AccessToken(token_hash=hashlib.sha256(at.encode()).hexdigest(), issued_at=now, expires_at=now + 3600,
                        **common),  # type: ignore[arg-type]
            RefreshToken(token_hash=hashlib.sha256(rt.encode()).hexdigest(), issued_at=now,
                         expires_at=now + 86400, **common), False)  # type: ignore[arg-type]
        access_tokens.append(at)
        refresh_tokens.append(rt)
    dispose = getattr(getattr(store, "engine", None), "dispose", None)
    if dispose is not None:
        dispose()
    return access_tokens[0], refresh_tokens[1:]


# -- load generators --------------------------------------------------------------------


class Result:
    def __init__(self, requests: int, seconds: float, latencies_ms: list[float] | tuple[float, float],
                 unexpected: int, statuses: dict[int, int] | None = None) -> None:
        self.requests = requests
        self.rate = requests / seconds
        self.cpu_us = float("nan")  # the server's CPU time per request, where measured
        if isinstance(latencies_ms, tuple):
            self.p50, self.p99 = latencies_ms
        else:
            cuts = statistics.quantiles(latencies_ms, n=100, method="inclusive")
            self.p50, self.p99 = cuts[49], cuts[98]
        self.unexpected = unexpected
        self.statuses = statuses or {}  # unexpected answers by status, where known


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, headers: dict[str, str], expected: int, connections: int, duration: float) -> Result:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", url]
    for name, value in headers.items():
        cmd[1:1] = ["-H", f"{name}: {value}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    seconds_text = re.search(r"requests in ([\d.]+)(\w+),", out)
    assert seconds_text is not None
    seconds = float(seconds_text.group(1)) * _UNIT_MS[seconds_text.group(2)] / 1000
    cuts = {int(p): float(v) * _UNIT_MS[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", out, re.M)}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    wrong = int(non_2xx.group(1)) if non_2xx else 0
    if expected >= 400:  # every answer is meant to be non-2xx
        wrong = requests - wrong
    if errors:
        wrong += sum(int(n) for n in errors.groups())
    if len(cuts) < 2:
        raise SystemExit(f"unexpected output of {' '.join(cmd)}:\n{out}")
    return Result(requests, seconds, (cuts[50], cuts[99]), wrong)


async def _drive(workers: list[Callable[[httpx.AsyncClient], Awaitable[int]]], expected: int,
                 duration: float) -> Result:
    """Each worker sends one request at a time and returns its status."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=len(workers), max_keepalive_connections=len(workers))
    async with httpx.AsyncClient(limits=limits, timeout=30, trust_env=False) as http:
        end = time.perf_counter() + duration

        async def loop(worker: Callable[[httpx.AsyncClient], Awaitable[int]]) -> None:
            while time.perf_counter() < end:
                started = time.perf_counter()
                statuses[await worker(http)] += 1
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(loop(w) for w in workers))
        elapsed = time.perf_counter() - started
    wrong = {status: n for status, n in statuses.items() if status != expected}
    return Result(len(latencies), elapsed, latencies, sum(wrong.values()), wrong)


def python_load(url: str, headers: dict[str, str], expected: int, connections: int, duration: float) -> Result:
    async def get(http: httpx.AsyncClient) -> int:
        return (await http.get(url, headers=headers)).status_code

    return asyncio.run(_drive([get] * connections, expected, duration))


def refresh_load(token_url: str, chains: list[list[str]], duration: float) -> Result:
    """Each chain is a one-item list: its current refresh token, replaced as it rotates."""
    def grant_on(current: list[str]) -> Callable[[httpx.AsyncClient], Awaitable[int]]:
        async def grant(http: httpx.AsyncClient) -> int:
            r = await http.post(token_url, data={"grant_type": "refresh_token", "refresh_token": current[0],
                                                 "client_id": CLIENT_ID})
            if r.status_code == 200:
                current[0] = r.json()["refresh_token"]
            return r.status_code

        return grant

    return asyncio.run(_drive([grant_on(chain) for chain in chains], 200, duration))


# -- the run -----------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_pinned(cmd: list[str], log: Path, pin: bool, ready: Callable[[], bool]) -> subprocess.Popen:
    """``cmd`` running on core 0 (with ``pin``), its output in ``log``, once
    ``ready()`` says so (within 30 s, else the run ends saying why)."""
    with log.open("wb") as out:
        proc = subprocess.Popen((["taskset", "-c", "0"] if pin else []) + cmd, stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"{cmd[0]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if ready():
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.terminate()
    raise SystemExit(f"{' '.join(cmd)} did not start:\n{log.read_text()[-3000:]}")


def start_server(config: Path, base: str, log: Path, on: str, pin: bool) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--serve", str(config), "--servers", on]
    return start_pinned(cmd, log, pin,
                        lambda: httpx.get(f"{base}/bare", timeout=1, trust_env=False).status_code == 200)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


GUARDED, BARE, REFUSED = "(a) guard + trivial app, valid token", "(b) trivial app, no guard", "(c) guard, no token: 401"
FLOOR = "(e) least possible guard + trivial app"
REFRESH_ONE = "(d1) refresh grants, one family in turn"
REFRESH = "(dN) refresh grants, N families at once"
# What each server runs with, for the record.
PACKAGES = {"uvicorn": ("uvicorn", "httptools", "uvloop"), "hypercorn-trio": ("hypercorn", "trio"),
            "hypercorn": ("hypercorn",)}


def versions(on: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    def one(name: str) -> str:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            return f"{name} (not installed)"

    return ", ".join(one(name) for name in PACKAGES[on.removesuffix(WITHOUT_METRICS)])


def measure_server(args: argparse.Namespace, on: str, config: Path, base: str, access: str,
                   chains: list[list[str]], home: Path, pin: bool) -> dict[str, list[Result]]:
    """Each case's rounds on server ``on`` (REFRESH_ONE, REFRESH: one)."""
    proc = start_server(config, base, home / f"server-{on}.log", on, pin)
    try:
        load = wrk if args.generator == "wrk" else python_load
        bearer = {"authorization": f"Bearer {access}"}
        cases = {
            GUARDED: (f"{base}/mcp", bearer, 200),
            # The same request line and headers, so only the guard differs.
            BARE: (f"{base}/bare", bearer, 200),
            REFUSED: (f"{base}/mcp", {}, 401),
            FLOOR: (f"{base}/floor", bearer, 200),
        }
        load(f"{base}/bare", bearer, 200, args.connections, 1.0)  # warm up
        rounds: dict[str, list[Result]] = {name: [] for name in cases}
        # Rounds alternate the cases, so a noisy moment on the machine hits all.
        for _ in range(args.rounds):
            for name, (url, headers, expected) in cases.items():
                cpu_before = cpu_seconds(proc.pid)
                result = load(url, headers, expected, args.connections, args.duration)
                result.cpu_us = (cpu_seconds(proc.pid) - cpu_before) / result.requests * 1e6
                rounds[name].append(result)
        # One grant after another (each a durable commit), then every family at once.
        rounds[REFRESH_ONE] = [refresh_load(f"{base}/oauth/token", chains[:1], args.duration)]
        rounds[REFRESH] = [refresh_load(f"{base}/oauth/token", chains, args.duration)]
    finally:
        stop_server(proc)
    return rounds


def report(on: str, rounds: dict[str, list[Result]], pin: bool) -> None:
    print(f"\nserver: {on} ({versions(on)}); "
          + ("pinned: server on core 0, load generator on core 1" if pin else "not pinned"))
    print(f"{'case, best round':<40}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'CPU us/req':>12}{'unexpected':>12}")
    for name, rs in rounds.items():
        r = max(rs, key=lambda r: r.rate)  # the round least disturbed by the rest of the machine
        seen = ", ".join(f"HTTP {status}: {n}" for status, n in sorted(r.statuses.items()))
        print(f"{name:<40}{r.rate:>10.0f}{r.p50:>10.2f}{r.p99:>10.2f}{r.cpu_us:>12.0f}{r.unexpected:>12}  {seen}")
    for case, target in ((GUARDED, 0.95), (REFUSED, 0.8), (FLOOR, 0.95)):
        label = case[:3] + "/(b)"
        paired = [rc.rate / rb.rate for rc, rb in zip(rounds[case], rounds[BARE])]
        ratio = statistics.median(paired)
        cpu = statistics.median(rb.cpu_us / rc.cpu_us for rc, rb in zip(rounds[case], rounds[BARE]))
        print(f"{label} req/s, each round: {', '.join(f'{x:.3f}' for x in paired)}; median {ratio:.3f} "
              f"({'meets' if ratio >= target else 'misses'} >= {target}); as CPU time (b)/{case[:3]}: "
              f"median {cpu:.3f}")
    cpu = {case[:3]: statistics.median(r.cpu_us for r in rounds[case]) for case in (GUARDED, BARE, REFUSED, FLOOR)}
    print("server CPU per request, median of rounds: " + ", ".join(f"{k} {v:.1f} us" for k, v in cpu.items())
          + f": the guard adds {cpu['(a)'] - cpu['(b)']:.1f} us to a bare request, a 401 costs "
          f"{cpu['(c)'] - cpu['(b)']:.1f} us more than one, the least possible guard adds "
          f"{cpu['(e)'] - cpu['(b)']:.1f} us")


def compare(results: dict[str, dict[str, list[Result]]]) -> None:
    first, *others = results
    for on in others:
        for case in (GUARDED, REFUSED):
            times = statistics.median(r.rate for r in results[first][case]) / \
                statistics.median(r.rate for r in results[on][case])
            print(f"{case[:3]} on {first} / on {on}, req/s (medians of rounds): {times:.2f}x")


def measure(args: argparse.Namespace, database: str, home: Path) -> None:
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    if pin:
        os.sched_setaffinity(0, {1})  # this process and its load generators
    port = free_port()  # every server in turn, on the same port (the tokens name it)
    base = f"http://127.0.0.1:{port}"
    keys = home / "bench.keys"
    config = home / "bench.toml"
    config.write_text(CONFIG.format(port=port, database=database, keys=keys, tenant=TENANT,
                                    token_cache=args.token_cache))
    access, refresh = issue(database, str(keys), port, args.connections)
    floor_token_file(config).write_text(access)
    chains = [[token] for token in refresh]
    results = {on: measure_server(args, on, config, base, access, chains, home, pin)
               for on in args.servers.split(",")}
    label = "sqlite" if database.startswith("sqlite") else database.split("://")[0]
    print(f"\nstore: {label}; {args.connections} connections (N = {args.connections} refresh families); "
          f"{args.duration:g} s per case; {args.rounds} rounds of (a)-(c); load: {args.generator} for (a)-(c), "
          f"httpx for (d1), (dN)")
    for on, rounds in results.items():
        report(on, rounds, pin)
    if len(results) > 1:
        print()
        compare(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per case (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (a)-(c) (default 3)")
    parser.add_argument("--servers", default="uvicorn",
                        help="comma-separated, of uvicorn (serve's default), hypercorn-trio (serve --trio) and "
                             "hypercorn (asyncio, what serve ran on before), each also with the suffix "
                             f"{WITHOUT_METRICS} (its guard counting no metrics); default uvicorn")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the server and the load to a core each")
    parser.add_argument("--database", default="sqlite", help="sqlite (a temporary file) or a database URL")
    parser.add_argument("--generator", choices=["wrk", "python"], default="wrk" if shutil.which("wrk") else "python")
    parser.add_argument("--token-cache", type=float, default=5.0,
                        help="server.token_cache_seconds of the server (default 5, as served; 0 = off)")
    parser.add_argument("--serve", metavar="CONFIG", help=argparse.SUPPRESS)  # the server process
    args = parser.parse_args()
    from mcp_oauth_proxy.serving import SERVERS

    unknown = {s.removesuffix(WITHOUT_METRICS) for s in args.servers.split(",")} - set(SERVERS)
    if unknown:
        parser.error(f"--servers: unknown {', '.join(sorted(unknown))} (known: {', '.join(SERVERS)})")
    if args.serve:
        return serve(args.serve, args.servers)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        if args.database == "sqlite":
            return measure(args, f"sqlite:///{home / 'bench.db'}", home)
        if not args.database.startswith("postgresql"):
            return measure(args, args.database, home)
        import sqlalchemy

        from mcp_oauth_proxy.storage.sql import make_engine

        schema = f"bench_{secrets.token_hex(4)}"
        admin = make_engine(args.database)
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
        try:
            sep = "&" if "?" in args.database else "?"
            measure(args, f"{args.database}{sep}options=-csearch_path%3D{schema}", home)
        finally:
            with admin.begin() as conn:
                conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()


if __name__ == "__main__":
    main()
