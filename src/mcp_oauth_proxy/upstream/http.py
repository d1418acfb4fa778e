"""Outbound HTTP to the upstream identity provider: the carriers of the
core's Fetch effects, sync (WSGI) and async (ASGI on asyncio or trio).

Every call is made on an event loop (the async carrier's pooled httpx
client; for the sync one, a loop and a connection of each call's own), TLS
verified, with timeouts on every phase and one deadline for the whole call,
its head included (a provider sending a byte now and then would otherwise
keep a connection for ever: a blocking read can only time out, and each
byte restarts its clock), a cap on the answer's size, the process's proxy and CAs (egress.py,
never the environment on its own), and no redirects followed: a 3xx comes
back to the core as it is, which treats it as an unexpected answer. One
organization's calls (PUBLIC_ONLY, naming it) hold at most PER_ORGANIZATION
of the pool at once: its slow provider must not keep every other tenant's
sign-ins waiting. Every failure becomes ``FetchFailed`` with a fixed
message, so nothing the upstream said (or how it failed) reaches a client.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

from ..core.errors import FetchFailed
from ..core.http import HttpRequest, HttpResponse
from ..core.upstream import MAX_UPSTREAM_BODY
from .egress import PUBLIC_ONLY, Egress

log = logging.getLogger("mcp_oauth_proxy.upstream")

DEFAULT_TIMEOUT = 10.0
_UNREACHABLE = "the identity provider could not be reached"


class TooLarge(Exception):
    """An answer grew past the size its reader allows."""


def append_limited(body: bytearray, chunk: bytes, limit: int) -> None:
    """Add a chunk of an answer being read, refusing to hold more than ``limit`` bytes."""
    body += chunk
    if len(body) > limit:
        raise TooLarge()


_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
# Calls of one organization under way at once, per carrier; beyond, refused at once.
PER_ORGANIZATION = 10


class _Places:
    """Each organization's calls under way (any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken: dict[str, int] = {}

    @contextlib.contextmanager
    def of(self, request: HttpRequest) -> Iterator[None]:
        organization = request.public_only
        if organization is None:
            yield
            return
        with self._lock:
            if self._taken.get(organization, 0) >= PER_ORGANIZATION:
                raise _failed(request, _Busy())
            self._taken[organization] = self._taken.get(organization, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._taken.pop(organization) - 1
                if left:
                    self._taken[organization] = left


class _Busy(Exception):
    """The organization has PER_ORGANIZATION calls under way."""


def _client_args(timeout: float) -> dict[str, Any]:
    return {
        "timeout": httpx.Timeout(timeout),
        "follow_redirects": False,
        "trust_env": False,  # the proxy and CAs are the Egress's, decided once
    }


def _where(url: str) -> str:
    """The URL without user info or query, which may carry credentials."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "an invalid URL"
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def marked(request: HttpRequest) -> dict[str, Any]:
    """The httpx request extensions carrying ``request.public_only`` (the organization)."""
    return {PUBLIC_ONLY: request.public_only} if request.public_only else {}


def _failed(request: HttpRequest, exc: Exception) -> FetchFailed:
    # The exception class is enough to diagnose; its text may echo the URL.
    log.warning("upstream request to %s failed: %s", _where(request.url), type(exc).__name__)
    return FetchFailed(_UNREACHABLE)


async def read_within(client: httpx.AsyncClient, request: HttpRequest, deadline: float,
                      max_body: int) -> HttpResponse:
    """One call, over within ``deadline`` seconds all told (TimeoutError),
    its answer at most ``max_body`` bytes (TooLarge); httpx's own errors as
    they are."""
    with anyio.fail_after(deadline):
        async with client.stream(request.method, request.url, headers=list(request.headers),
                                 content=request.body or None, extensions=marked(request)) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                append_limited(body, chunk, max_body)
            return HttpResponse(response.status_code, tuple(response.headers.items()), bytes(body))


async def _fetch(client: httpx.AsyncClient, request: HttpRequest, deadline: float, max_body: int) -> HttpResponse:
    try:
        return await read_within(client, request, deadline, max_body)
    except (httpx.HTTPError, httpx.InvalidURL, TooLarge, ValueError, TimeoutError) as exc:
        raise _failed(request, exc) from None


class SyncFetcher:
    """Carries out Fetch effects for a blocking caller (WSGI): each call on
    an event loop of its own, as the async carrier makes it, so that its
    deadline cuts a read short (a blocking read can only time out, and a
    provider sending its head a byte at a time never lets it). So each call
    has a connection of its own."""

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT, egress: Egress | None = None,
                 max_body: int = MAX_UPSTREAM_BODY) -> None:
        self._egress = egress or Egress()
        self._args = _client_args(timeout)
        self._deadline = timeout
        self._max_body = max_body
        self._places = _Places()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with self._places.of(request):
            return anyio.run(self._once, request)

    async def _once(self, request: HttpRequest) -> HttpResponse:
        transport = self._egress.async_transport(limits=httpx.Limits(max_connections=1))
        async with httpx.AsyncClient(transport=transport, **self._args) as client:
            return await _fetch(client, request, self._deadline, self._max_body)

    def close(self) -> None:
        pass  # nothing is kept between calls


class AsyncFetcher:
    """Carries out Fetch effects with a pooled httpx.AsyncClient; works on
    asyncio and trio (httpx runs on anyio). The client is made on first use,
    inside the running event loop, and must be closed in that loop."""

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT, egress: Egress | None = None,
                 max_body: int = MAX_UPSTREAM_BODY) -> None:
        self._egress = egress or Egress()
        self._args = _client_args(timeout)
        self._client: httpx.AsyncClient | None = None
        self._deadline = timeout
        self._max_body = max_body
        self._places = _Places()

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        if self._client is None:
            self._client = httpx.AsyncClient(transport=self._egress.async_transport(limits=_LIMITS), **self._args)
        with self._places.of(request):
            return await _fetch(self._client, request, self._deadline, self._max_body)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
