"""Outbound HTTP to the upstream identity provider: the carriers of the
core's Fetch effects, sync (WSGI) and async (ASGI on asyncio or trio).

One pooled httpx client per carrier (connection reuse), TLS verified,
timeouts on every phase and one deadline for the whole call (a provider
sending a byte now and then would otherwise keep a pooled connection for
ever), a cap on the answer's size, the process's proxy and CAs (egress.py,
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
import time
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


class SyncFetcher:
    """Carries out Fetch effects with a blocking, pooled httpx client."""

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT, egress: Egress | None = None,
                 max_body: int = MAX_UPSTREAM_BODY) -> None:
        transport = (egress or Egress()).transport(limits=_LIMITS)
        self._client = httpx.Client(transport=transport, **_client_args(timeout))
        self._deadline = timeout
        self._max_body = max_body
        self._places = _Places()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # A blocking read cannot be cut short: the deadline is checked
        # between reads, each bounded by the read timeout.
        ends = time.monotonic() + self._deadline
        try:
            with self._places.of(request), \
                    self._client.stream(request.method, request.url, headers=list(request.headers),
                                        content=request.body or None, extensions=marked(request)) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    append_limited(body, chunk, self._max_body)
                    if time.monotonic() > ends:
                        raise TimeoutError()
                return HttpResponse(response.status_code, tuple(response.headers.items()), bytes(body))
        except (httpx.HTTPError, httpx.InvalidURL, TooLarge, ValueError, TimeoutError) as exc:
            raise _failed(request, exc) from None

    def close(self) -> None:
        self._client.close()


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
        try:
            with self._places.of(request), anyio.fail_after(self._deadline):
                async with self._client.stream(request.method, request.url, headers=list(request.headers),
                                               content=request.body or None,
                                               extensions=marked(request)) as response:
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        append_limited(body, chunk, self._max_body)
                    return HttpResponse(response.status_code, tuple(response.headers.items()), bytes(body))
        except (httpx.HTTPError, httpx.InvalidURL, TooLarge, ValueError, TimeoutError) as exc:
            raise _failed(request, exc) from None

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
