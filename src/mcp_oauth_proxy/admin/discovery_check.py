"""The console's "check" of an OAuth configuration: its endpoints resolved
the way a login resolves them (OIDC discovery for oidc, google and auth0,
the configured endpoints for github and oauth2), by the same code, and what
came back or went wrong. An operator chooses where it goes, so it is bounded
all told: one deadline for the whole answer, a small body, two at a time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
import attrs
import httpx

from ..core.effects import Fetch, run_sync
from ..core.errors import EffectError, FetchFailed
from ..core.http import HttpRequest, HttpResponse
from ..core.models import OAuthConfig
from ..tenants_db import upstream_config
from ..upstream.egress import Egress
from ..upstream.http import TooLarge, read_within
from ..upstream.providers import PublicOnly


@attrs.frozen
class Check:
    ok: bool
    summary: str
    found: tuple[tuple[str, str], ...] = ()


# Checks under way at once, in this process: each holds a worker thread
# and an outbound connection for up to DEADLINE seconds.
_CHECKS = threading.BoundedSemaphore(2)
DEADLINE = 5.0
MAX_DOCUMENT = 256 * 1024


def bounded_fetch(request: HttpRequest, deadline: float = DEADLINE, limit: int = MAX_DOCUMENT,
                  egress: Egress | None = None) -> HttpResponse:
    """One request, over in ``deadline`` seconds all told, its head
    included (however slowly the other side sends), its body at most
    ``limit`` bytes; no redirects; through the proxy and trusting the CAs a
    login would (``egress``). Run on an event loop of its own, so that the
    deadline cuts a read short (a blocking read can only time out)."""
    return anyio.run(_bounded_fetch, request, deadline, limit, egress or Egress())


async def _bounded_fetch(request: HttpRequest, deadline: float, limit: int, egress: Egress) -> HttpResponse:
    transport = egress.async_transport(limits=httpx.Limits(max_connections=1))
    try:
        async with httpx.AsyncClient(transport=transport, timeout=deadline, follow_redirects=False,
                                     trust_env=False) as client:
            return await read_within(client, request, deadline, limit)
    except TooLarge:
        raise FetchFailed(f"the answer is larger than {limit // 1024} KiB") from None
    except TimeoutError:
        raise FetchFailed(f"no whole answer within {deadline:g} s") from None
    except httpx.HTTPError as error:
        raise FetchFailed(f"no answer ({type(error).__name__})") from None


def check_discovery(c: OAuthConfig, fetch: Callable[[HttpRequest], HttpResponse] = bounded_fetch) -> Check:
    """What resolving the configuration's endpoints finds; a few at a time."""
    if not _CHECKS.acquire(blocking=False):
        return Check(False, "other checks are under way: try again in a moment")
    try:
        return _check(c, fetch)
    finally:
        _CHECKS.release()


def _check(c: OAuthConfig, fetch: Callable[[HttpRequest], HttpResponse]) -> Check:
    from ..app import upstream_source

    source = PublicOnly(upstream_source(upstream_config(c), {}), c.organization)

    def perform(effect: Any) -> Any:
        if isinstance(effect, Fetch):
            return fetch(effect.request)
        raise TypeError(f"unexpected effect {effect!r}")

    where = getattr(source, "discovery_url", None)
    try:
        upstream = run_sync(source.resolve(), perform)
    except EffectError as failed:
        return Check(False, str(failed) or f"{where or 'the provider'} did not answer")
    found = tuple((k, str(getattr(upstream, k))) for k in (
        "issuer", "authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")
        if getattr(upstream, k, None))
    summary = f"found at {where}" if where else "the endpoints as configured (this kind has no discovery document)"
    return Check(True, summary, found)
