"""The guard's cost in instructions: what a request costs the server process,
counted by valgrind's callgrind, case by case, as ``bench_guard.py``'s cases.

    python bench/bench_guard_instructions.py [--requests 1000] [--servers uvicorn,hypercorn-trio]

Requests per second move by a tenth between runs on a shared machine;
instruction counts do not (the same code, inputs and environment give the
same count, whatever else the machine is doing). So this bench says
exactly how much work each case adds to a bare request, and a change to
the guard can be judged by it on a busy machine. Time is not instructions:
the server runs our code at a lower rate than a loop calling it would
(its caches are shared with the kernel's and the event loop's work), so
read the ratios here as the floor of what the same ratios are in
requests per second.

Each case starts the served app (``bench_guard.serve``: the standalone
server's app beside /bare and /floor) under callgrind, with counting off;
200 requests warm it up (the token cache holds the token from the first),
then counting is turned on for ``--requests`` requests, one after another
on one keep-alive connection, and off again. Housekeeping (a look at the
database each second) is counted with them: a little, the same in every
case.

  (a) GET /mcp with a valid token, (b) GET /bare, (c) GET /mcp without a
  token (the 401), (e) GET /floor: the least a guard can do (bench_guard.py).

It prints instructions per request for each case, each case's excess over
(b), and (b)/(a), (b)/(c), (b)/(e): the ratios bench_guard.py's targets are
about, as instructions. Needs ``valgrind`` (``apt-get install -y valgrind``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_guard import CONFIG, TENANT, floor_token_file, free_port, issue, versions

WARM_UP = 200
CASES = {  # name: (path, with the token, status expected)
    "(a) guard + trivial app, valid token": ("/mcp", True, 200),
    "(b) trivial app, no guard": ("/bare", True, 200),
    "(c) guard, no token: 401": ("/mcp", False, 401),
    "(e) least possible guard + trivial app": ("/floor", True, 200),
}


class Connection:
    """One keep-alive connection, a request at a time, each answer read whole."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.buffer = b""

    def ask(self, request: bytes) -> int:
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
        while len(self.buffer) < length:
            self.buffer += self._more()
        self.buffer = self.buffer[length:]
        return int(head.split(b" ", 2)[1])

    def _more(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise SystemExit("the server closed the connection")
        return data

    def close(self) -> None:
        self.sock.close()


def wait_for(port: int, proc: subprocess.Popen, log: Path) -> None:
    end = time.monotonic() + 300  # slow to start under valgrind
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the server did not start:\n{log.read_text()[-3000:]}")


def count(config: Path, port: int, on: str, path: str, token: str | None, expected: int, requests: int,
          home: Path) -> float:
    """Instructions per request of one case, in a server of its own."""
    out, log = home / "callgrind.out", home / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                 f"--callgrind-out-file={out}", sys.executable, str(Path(__file__).parent /
                                                                                       "bench_guard.py"),
                                 "--serve", str(config), "--servers", on],
                                stdout=sink, stderr=sink, stdin=subprocess.DEVNULL)
    try:
        wait_for(port, proc, log)
        request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: bench\r\n"
                   + (f"Authorization: Bearer {token}\r\n" if token else "") + "\r\n").encode()
        connection = Connection(port)
        for _ in range(WARM_UP):
            connection.ask(request)
        subprocess.run(["callgrind_control", "--instr=on", str(proc.pid)], check=True, capture_output=True)
        statuses = {connection.ask(request) for _ in range(requests)}
        subprocess.run(["callgrind_control", "--instr=off", str(proc.pid)], check=True, capture_output=True)
        connection.close()
        if statuses != {expected}:
            raise SystemExit(f"{path}: answered {statuses}, not {expected}")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    totals = re.search(r"^totals:\s*(\d+)", out.read_text(errors="replace"), re.M)
    assert totals is not None, "callgrind wrote no totals"
    return int(totals.group(1)) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="requests counted per case (default 1000)")
    parser.add_argument("--servers", default="uvicorn", help="comma-separated: uvicorn, hypercorn-trio")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("needs valgrind: apt-get install -y valgrind")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        port = free_port()
        database, keys, config = f"sqlite:///{home / 'bench.db'}", home / "bench.keys", home / "bench.toml"
        # A token cache longer than the run: (a) never goes to the database.
        config.write_text(CONFIG.format(port=port, database=database, keys=keys, tenant=TENANT, token_cache=3600))
        access, _ = issue(database, str(keys), port, 0)
        floor_token_file(config).write_text(access)
        print(f"instructions per request in the server process (callgrind), {args.requests} requests a case, "
              "one at a time on one connection")
        for on in args.servers.split(","):
            per = {name: count(config, port, on, path, access if with_token else None, status, args.requests, home)
                   for name, (path, with_token, status) in CASES.items()}
            bare = per["(b) trivial app, no guard"]
            print(f"\nserver: {on} ({versions(on)})")
            print(f"{'case':<42}{'instructions':>14}{'over (b)':>12}")
            for name, value in per.items():
                print(f"{name:<42}{value:>14,.0f}{value - bare:>+12,.0f}")
            a, c, e = (per[name] for name in ("(a) guard + trivial app, valid token", "(c) guard, no token: 401",
                                              "(e) least possible guard + trivial app"))
            print(f"(b)/(a) {bare / a:.3f}   (b)/(c) {bare / c:.3f}   (b)/(e) {bare / e:.3f}")


if __name__ == "__main__":
    main()
