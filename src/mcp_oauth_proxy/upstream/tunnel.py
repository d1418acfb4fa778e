"""An httpcore network backend whose connections go through an HTTP CONNECT
proxy, to exactly the address asked for.

The metadata-document fetcher checks the addresses a host resolves to and
connects to one of them; through a proxy it must still be that address, not
a name the proxy would resolve again (and might resolve to an internal
host). So the tunnel is asked for the checked IP address, and TLS inside it
still names the host (the fetcher's ``sni_hostname``). httpcore's own proxy
would ask for the URL's host instead, and verify the certificate against it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import httpcore

# A CONNECT answer's head is a few lines; anything longer is no proxy of ours.
MAX_HEAD = 8192


class TunnelBackend(httpcore.AsyncNetworkBackend):
    """``backend``'s connections, each made to ``proxy`` and tunnelled on
    (RFC 9110 §9.3.6) to the host and port asked for."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend, proxy: str) -> None:
        parts = urlsplit(proxy)
        self._backend = backend
        self._proxy = (parts.hostname or "", parts.port or 80)
        self._authorization = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            self._authorization = "Basic " + base64.b64encode(pair).decode()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(*self._proxy, timeout, local_address, socket_options)
        try:
            await self._connect(stream, host, port, timeout)
        except BaseException:  # a cancellation too (our deadline): the socket is closed all the same
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            raise
        return stream

    async def _connect(self, stream: httpcore.AsyncNetworkStream, host: str, port: int,
                       timeout: float | None) -> None:
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
        if self._authorization:
            head += f"Proxy-Authorization: {self._authorization}\r\n"
        await stream.write((head + "\r\n").encode("ascii"), timeout)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = await stream.read(MAX_HEAD, timeout)
            if not chunk or len(answer) + len(chunk) > MAX_HEAD:
                raise httpcore.ProxyError("the proxy gave no CONNECT answer")
            answer += chunk
        fields = answer.split(b"\r\n", 1)[0].split(b" ", 2)
        if len(fields) < 2 or not fields[0].startswith(b"HTTP/1.") or not fields[1].startswith(b"2"):
            raise httpcore.ProxyError("the proxy refused the tunnel")
        # The server has not spoken yet (TLS: the client speaks first), so
        # bytes after the head would be the proxy's own, not the server's.
        if answer.index(b"\r\n\r\n") + 4 != len(answer):
            raise httpcore.ProxyError("the proxy sent more than a CONNECT answer")

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("no unix sockets here")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)
