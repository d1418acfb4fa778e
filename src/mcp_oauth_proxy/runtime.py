"""Carrying out the core's effects in the real world: the clock, randomness,
a store and outbound HTTP, for the sync and the async drivers."""

from __future__ import annotations

import secrets
import time
from typing import Any, Awaitable, Callable

import anyio
import anyio.to_thread

from .core.context import Context
from .core.effects import Effect, Fetch, Sleep, StoreEffect
from .core.http import HttpRequest, HttpResponse
from .core.store import Store
from .core.tenant import Tenant

SyncFetch = Callable[[HttpRequest], HttpResponse]
AsyncFetch = Callable[[HttpRequest], Awaitable[HttpResponse]]


def new_context(tenant: Tenant, cookie_key: bytes) -> Context:
    """A context for one request: the time now, the system CSPRNG."""
    return Context(tenant=tenant, now=int(time.time()), random=secrets.token_bytes, cookie_key=cookie_key)


def sync_performer(store: Store, fetch: SyncFetch, sleep: Callable[[float], None] = time.sleep) -> Callable[[Effect], Any]:
    def perform(effect: Effect) -> Any:
        if isinstance(effect, StoreEffect):
            return effect.apply(store)
        if isinstance(effect, Fetch):
            return fetch(effect.request)
        if isinstance(effect, Sleep):
            return sleep(effect.seconds)
        raise TypeError(f"unknown effect {effect!r}")

    return perform


def async_performer(store: Store, fetch: AsyncFetch, *, store_blocks: bool = True) -> Callable[[Effect], Awaitable[Any]]:
    """``store_blocks``: run store calls in a worker thread (SQL backends),
    so they do not block the event loop; the memory store need not."""

    async def perform(effect: Effect) -> Any:
        if isinstance(effect, StoreEffect):
            if store_blocks:
                return await anyio.to_thread.run_sync(effect.apply, store)
            return effect.apply(store)
        if isinstance(effect, Fetch):
            return await fetch(effect.request)
        if isinstance(effect, Sleep):
            return await anyio.sleep(effect.seconds)
        raise TypeError(f"unknown effect {effect!r}")

    return perform
