"""A real ``mcp-oauth-proxy serve`` process for the attack tests, on the
default loop or ``--trio``: its config written from a few lines, its log,
its open file descriptors (/proc/PID/fd), and raw HTTP/1.1 over a socket,
so a test can send exactly the bytes an attacker would."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import threading
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import attrs
import httpx

from processes import free_port, stop_process, tail, wait_until

LOOPS = ["asyncio", "trio"]
DEADLINE = 30.0

CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
database = "{database}"
key_file = "{keys}"
{server}

[[tenants]]
slug = "acme"
issuer = "http://127.0.0.1:{port}"
resource = "http://127.0.0.1:{port}/mcp"
{tenant}

[tenants.upstream]
kind = "github"
client_id = "cid"
client_secret = "secret"
"""


@attrs.define
class Served:
    port: int
    proc: subprocess.Popen
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> bytes:
        return f"127.0.0.1:{self.port}".encode()

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def connect(self, timeout: float = 5.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)


def config_text(port: int, tmp: Path, server: str = "", tenant: str = "", database: str = "memory://",
                more: str = "") -> str:
    """A config with tenant ``acme`` on 127.0.0.1:PORT; ``server`` and
    ``tenant`` are more lines of those tables, ``more`` more tables."""
    return CONFIG.format(port=port, database=database, keys=tmp / "keys", server=server, tenant=tenant) + more


@contextlib.contextmanager
def serve(tmp: Path, loop: str, port: int | None = None, listen: int | None = None,
          **config: str) -> Iterator[Served]:
    """The server running with ``config_text(**config)``, listening on
    ``listen`` when given (a replica of the server at ``port``); stopped
    (and its exit checked) afterwards."""
    port = port or free_port()
    tenant_host = f"127.0.0.1:{port}"
    path = tmp / "proxy.toml"
    text = config_text(port, tmp, **config)
    if listen is not None:
        text = text.replace(f'listen = "{tenant_host}"', f'listen = "127.0.0.1:{listen}"')
        port = listen
    path.write_text(text)
    cmd = [sys.executable, "-m", "mcp_oauth_proxy.cli", "serve", "--config", str(path)]
    if loop == "trio":
        cmd.append("--trio")
    log = tmp / f"serve-{loop}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=tmp)
    served = Served(port, proc, log)
    try:
        wait_until(lambda: httpx.get(f"{served.base}/.well-known/oauth-authorization-server", timeout=2,
                                     headers={"host": tenant_host}, trust_env=False).status_code == 200,
                   DEADLINE, "serve", proc, log)
        yield served
    finally:
        stop_process(proc)
    assert proc.returncode == 0, tail(log)


def chunked(count: int, size: int) -> bytes:
    """A chunked body (RFC 9112 §7.1) of ``count`` chunks of ``size`` bytes."""
    chunk = f"{size:x}\r\n".encode() + b"x" * size + b"\r\n"
    return chunk * count + b"0\r\n\r\n"


def request(method: str, path: str, host: bytes, headers: tuple[tuple[str, str], ...] = (),
            body: bytes | None = None) -> bytes:
    """A raw HTTP/1.1 request; a ``body`` is sent chunked."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"host: " + host]
    lines += [f"{k}: {v}".encode() for k, v in headers]
    if body is not None:
        lines.append(b"transfer-encoding: chunked")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


@attrs.frozen
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def read_answer(sock: socket.socket, timeout: float = 5.0) -> Answer | None:
    """The next response on ``sock`` (its length said by Content-Length, as
    every answer of ours is); None if the server closed the connection
    cleanly first. Raises socket.timeout if neither happens in time."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            if data:
                raise AssertionError(f"the connection closed inside a response head: {data!r}")
            return None
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    headers = {}
    for field in fields:
        name, _, value = field.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        more = sock.recv(65536)
        if not more:
            raise AssertionError("the connection closed inside a response body")
        rest += more
    return Answer(int(status_line.split()[1]), headers, rest[:length])


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """How long until the server closed ``sock`` (EOF or reset), reading and
    dropping whatever else comes; None if it is still open after ``seconds``."""
    start = time.monotonic()
    end = start + seconds
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except socket.timeout:
            return None
        except ConnectionResetError:
            return time.monotonic() - start
    return None


def settled(count: Callable[[], int], target: int | None = None, seconds: float = 10.0) -> int:
    """Poll ``count()`` until it is at most ``target`` (None: until it has not
    changed for half a second) or ``seconds`` passed; its last value."""
    end = time.monotonic() + seconds
    value, since = count(), time.monotonic()
    while time.monotonic() < end:
        if target is not None and value <= target or target is None and time.monotonic() - since >= 0.5:
            break
        time.sleep(0.05)
        now = count()
        if now != value:
            value, since = now, time.monotonic()
    return value


def seed_access_token(database: str, keys: Path, tenant: str, resource: str, user: str = "u") -> str:
    """An access token of ``tenant`` for ``resource``, stored in the
    database a server will open (with its key file), as if issued by a
    login of ``user``."""
    from mcp_oauth_proxy.core.context import ACCESS_PREFIX
    from mcp_oauth_proxy.core.models import AccessToken, CodeGrant, Grant, UpstreamTokens
    from mcp_oauth_proxy.storage.keys import load_or_create_keyring
    from mcp_oauth_proxy.storage.open import open_store

    now = int(time.time())
    token = f"{ACCESS_PREFIX}{tenant}-{os.urandom(8).hex()}"
    store = open_store(database, load_or_create_keyring(str(keys))[0])
    mark = "" if user == "u" else f"-{user}"
    grant = Grant(tenant=tenant, grant_id=f"g-{tenant}{mark}", client_id="c", user_id=user, scope=("mcp",),
                  resource=resource, code_hash=f"code-{tenant}{mark}", claims={}, upstream=UpstreamTokens("up"),
                  created_at=now, expires_at=now + 86400)
    store.save_grant_and_code(grant, CodeGrant(
        tenant=tenant, code_hash=grant.code_hash, grant_id=grant.grant_id, client_id="c", user_id=user,
        redirect_uri="http://127.0.0.1/cb", redirect_uri_given=True, code_challenge="c" * 43, scope=("mcp",),
        resource=resource, expires_at=now + 60))
    access = AccessToken(tenant=tenant, token_hash=hashlib.sha256(token.encode()).hexdigest(),
                         grant_id=grant.grant_id, client_id="c", user_id=user, scope=("mcp",), resource=resource,
                         issued_at=now, expires_at=now + 3600)
    assert store.redeem_code(tenant, grant.code_hash, now, access, None, False).name == "ISSUED"
    store.engine.dispose()
    return token


@contextlib.contextmanager
def backend_at_mcp(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A backend answering with ``handler`` in threads of this process: its
    ``/mcp`` URL, for a tenant's ``backend``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mcp"
    finally:
        server.shutdown()
        server.server_close()
