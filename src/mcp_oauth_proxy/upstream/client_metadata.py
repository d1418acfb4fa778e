"""Fetching Client ID Metadata Documents from the open internet, safely.

The URL comes from whoever calls our authorization endpoint, so the fetch is
guarded against SSRF (MCP security best practices; CIMD §6): https only,
every address the host resolves to must be public (loopback only where the
tenant allows it for local development), the connection goes to the address
that was checked (no second DNS answer), no redirects and a small size cap.
Anyone can start a fetch, so none may tie us up: one wall-clock deadline
covers the whole of it (resolving, connecting, TLS, headers and body), no
more than ``max_fetches`` run at once (the rest are refused at once with
TooManyFetches; one requester gets a few of them), and the adapters cancel
a fetch whose requester has gone.
Good answers are cached per their Cache-Control, clamped (core/cimd.py
cache_seconds); failures are remembered for FAILED_CACHE seconds.
"""

from __future__ import annotations

import contextlib
import math
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.to_thread
import httpcore

from ..core.cimd import FAILED_CACHE, MAX_DOCUMENT, cache_seconds
from ..core.effects import FetchClientMetadata
from ..core.errors import FetchFailed, TooManyFetches
from ..core.http import HttpResponse
from ..core.requesters import requester_key
from .addresses import Address, address_allowed, addresses_of
from .closing_backend import ClosingBackend
from .egress import Egress
from .http import TooLarge, append_limited
from .tunnel import TunnelBackend


def _target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise FetchFailed("the document URL must be https")
    return parts.hostname, parts.port or 443


def _checked(addresses: list[Address], allow_loopback: bool) -> str:
    if not addresses:
        raise FetchFailed("the document's host does not resolve")
    # All of them, not just the first: a host may mix public and private answers.
    if not all(address_allowed(a, allow_loopback) for a in addresses):
        raise FetchFailed("the document's host resolves to a private or reserved address")
    return str(addresses[0])


def _pinned(url: str, address: str) -> tuple[str, dict[bytes | str, bytes | str], dict[str, str]]:
    """The URL rewritten to the checked address, with the Host header and the
    TLS server name kept, so the certificate is still verified for the host."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = f"{host}:{parts.port}" if parts.port else host
    pinned = urlunsplit(("https", netloc, parts.path, parts.query, ""))
    return pinned, {"host": parts.netloc, "accept": "application/json"}, {"sni_hostname": parts.hostname or ""}


@contextlib.contextmanager
def _transport_failures() -> Iterator[None]:
    """httpcore's failures as FetchFailed, saying no more than the kind."""
    try:
        yield
    except TooLarge:
        raise FetchFailed(f"the document is larger than {MAX_DOCUMENT} bytes") from None
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException, httpcore.UnsupportedProtocol,
            httpcore.ProxyError):
        raise FetchFailed("the document's host could not be reached over TLS") from None


def _answer(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> HttpResponse:
    if 300 <= status < 400:
        raise FetchFailed("the document URL redirects; redirects are not followed")
    return HttpResponse(status, tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers), body)


class _Cache:
    """Answers by the effect that asked: its URL and the address policy the
    fetch was checked under, so a tenant allowing loopback never fills the
    cache for one that does not. A failure (a FetchFailed, or an answer
    other than 200) is kept briefly, so that a host that fails slowly is
    not asked again by every request."""

    def __init__(self, size: int, clock: Callable[[], float]) -> None:
        self._entries: OrderedDict[FetchClientMetadata, tuple[float, HttpResponse | FetchFailed]] = OrderedDict()
        self._size = size
        self._clock = clock
        self._lock = threading.Lock()

    def get(self, effect: FetchClientMetadata) -> HttpResponse | None:
        """The remembered answer (None if none); raises a remembered failure."""
        with self._lock:
            entry = self._entries.get(effect)
            if entry is None or entry[0] <= self._clock():
                self._entries.pop(effect, None)
                return None
            self._entries.move_to_end(effect)
        if isinstance(entry[1], FetchFailed):
            raise FetchFailed(str(entry[1]))
        return entry[1]

    def put(self, effect: FetchClientMetadata, outcome: HttpResponse | FetchFailed) -> None:
        if isinstance(outcome, HttpResponse) and outcome.status == 200:
            ttl = cache_seconds(outcome.header("cache-control"))
        else:
            ttl = FAILED_CACHE
        with self._lock:
            self._entries[effect] = (self._clock() + ttl, outcome)
            self._entries.move_to_end(effect)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


class _Slots:
    """How many fetches run, in all and per requester; taken without waiting."""

    def __init__(self, total: int, per_requester: int) -> None:
        self._total = total
        self._per_requester = per_requester
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, requester: str) -> bool:
        with self._lock:
            if sum(self._running.values()) >= self._total or self._running.get(requester, 0) >= self._per_requester:
                return False
            self._running[requester] = self._running.get(requester, 0) + 1
            return True

    def give_back(self, requester: str) -> None:
        with self._lock:
            left = self._running[requester] - 1
            if left:
                self._running[requester] = left
            else:
                del self._running[requester]


class DocumentFetcher:
    """Carries out FetchClientMetadata effects, sync (``fetch``) or async
    (``fetch_async``), each within ``deadline`` seconds, at most
    ``max_fetches`` at once per fetcher (one per Site, so per process), of
    which one requester (an address, an IPv6 /64) runs at most
    ``max_fetches_per_requester``: no one fills every slot for everyone.
    ``egress``: the process's proxy and CAs; ``verify`` replaces its CAs
    (tests that trust their own)."""

    def __init__(
        self,
        *,
        deadline: float = 5.0,
        max_fetches: int = 10,
        max_fetches_per_requester: int = 2,
        egress: Egress | None = None,
        verify: ssl.SSLContext | None = None,
        cache_size: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._deadline = deadline
        self._slots = _Slots(max_fetches, max_fetches_per_requester)
        self._egress = egress or Egress()
        self._ssl_context = verify or self._egress.ssl_context
        self._cache = _Cache(cache_size, clock)

    def fetch(self, effect: FetchClientMetadata) -> HttpResponse:
        """For the sync driver (WSGI): the async fetch on an event loop of
        its own, so that its one deadline holds the worker thread no longer,
        whatever the host does (blocking sockets only time each operation)."""
        cached = self._cache.get(effect)
        return cached if cached is not None else anyio.run(self.fetch_async, effect)

    async def fetch_async(self, effect: FetchClientMetadata) -> HttpResponse:
        cached = self._cache.get(effect)
        if cached is not None:
            return cached
        # Never waits: a request finding no slot free is answered at once.
        requester = requester_key(effect.requester)
        if not self._slots.take(requester):
            # A slot is free again within one deadline at the latest.
            raise TooManyFetches(math.ceil(self._deadline))
        try:
            answer = await self._fetch(effect)
        except FetchFailed as exc:
            self._cache.put(effect, exc)
            raise
        finally:
            self._slots.give_back(requester)
        self._cache.put(effect, answer)
        return answer

    async def _fetch(self, effect: FetchClientMetadata) -> HttpResponse:
        host, port = _target(effect.url)
        try:
            with anyio.fail_after(self._deadline):
                # A resolver that hangs is left behind (its thread ends on its own) at the deadline.
                found = await anyio.to_thread.run_sync(addresses_of, host, port, abandon_on_cancel=True)
                url, headers, extensions = _pinned(effect.url, _checked(found, effect.allow_loopback))
                proxy = self._egress.proxy_for(effect.url)
                backend = ClosingBackend() if proxy is None else TunnelBackend(ClosingBackend(), proxy)
                with _transport_failures():
                    # No timeouts of its own: the deadline above bounds every
                    # phase, and a cancelled handshake still closes its socket.
                    async with httpcore.AsyncConnectionPool(ssl_context=self._ssl_context, max_connections=1,
                                                            network_backend=backend) as pool:
                        async with pool.stream("GET", url, headers=headers, extensions=extensions) as response:
                            body = bytearray()
                            async for chunk in response.aiter_stream():
                                append_limited(body, chunk, MAX_DOCUMENT)
                            return _answer(response.status, response.headers, bytes(body))
        except TimeoutError:
            raise FetchFailed("the document's host did not answer in time") from None
