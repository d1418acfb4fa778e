"""Carrying out the core's effects in the real world: the clock, randomness,
a store, outbound HTTP and the audit log, for the sync and async drivers."""

from __future__ import annotations

import json
import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, cast

import anyio
import anyio.to_thread
import attrs
from anyio.lowlevel import RunVar

from . import metrics
from .core.context import Context
from .core.effects import (
    Audit,
    Effect,
    Fetch,
    FetchClientMetadata,
    Flow,
    RecordAudit,
    RedeemCode,
    ResolveKeys,
    RotateRefreshToken,
    Sleep,
    StoreEffect,
    run_async,
    run_sync,
)
from .core.errors import FetchFailed, StorageUnavailable, TooManyFetches
from .core.http import HttpRequest, HttpResponse
from .core.store import AUDIT_RETENTION, Store, traits_of
from .core.tenant import Tenant
from .logs import Throttled

SyncFetch = Callable[[HttpRequest], HttpResponse]
AsyncFetch = Callable[[HttpRequest], Awaitable[HttpResponse]]
SyncDocumentFetch = Callable[[FetchClientMetadata], HttpResponse]
AsyncDocumentFetch = Callable[[FetchClientMetadata], Awaitable[HttpResponse]]
# Carries out ResolveKeys as a flow of Fetch effects (upstream/key_sets.py).
KeyResolver = Callable[[ResolveKeys], Flow[Any]]

audit_log = logging.getLogger("mcp_oauth_proxy.audit")
# Every request that needs the database fails while it is away: a line
# every few seconds says so, with the count of the others.
_store_failed = Throttled(logging.getLogger("mcp_oauth_proxy"), logging.WARNING, interval=10.0)


def _noted(failure: StorageUnavailable, effect: StoreEffect[Any]) -> StorageUnavailable:
    _store_failed("the database is unavailable (%s): answering 503", failure)
    metrics.store_failures.labels(effect.method).inc()
    return failure


def _count_document(failure: BaseException | None) -> None:
    outcome = "fetched" if failure is None else "busy" if isinstance(failure, TooManyFetches) else "refused"
    metrics.document_fetches.labels(outcome).inc()


def _count_fetch(effect: Fetch, started: float, answer: HttpResponse | None) -> None:
    outcome = "error" if answer is None else metrics.outcome_of(answer.status)
    metrics.upstream_call(effect.kind, outcome, time.perf_counter() - started)


def now_seconds() -> int:
    """The time now, as the core counts it: whole seconds since the epoch."""
    return int(time.time())


def new_context(tenant: Tenant, cookie_key: bytes, requester: str = "") -> Context:
    """A context for one request: the time now, the system CSPRNG, who asks."""
    return Context(tenant=tenant, now=now_seconds(), random=secrets.token_bytes, cookie_key=cookie_key,
                   requester=requester)


def log_audit(event: Audit) -> None:
    """One structured record per event, and its count (metrics); the
    formatter decides text or JSON lines."""
    metrics.grant_event(event.tenant, event.event)
    fields = {"event": event.event, "tenant": event.tenant, "client_id": event.client_id, "user_id": event.user_id}
    fields.update(dict(event.detail))
    audit_log.info(json.dumps(fields, separators=(",", ":"), sort_keys=True), extra={"audit": fields})


def recorded(event: Audit, retention: int) -> RecordAudit:
    """The store operation that keeps a flow's event in the audit log
    (the admin API's ``audit`` list), for ``retention`` seconds."""
    now = now_seconds()
    return RecordAudit(event.at(now), now + retention)


def _retained(effect: StoreEffect[Any], retention: int) -> StoreEffect[Any]:
    # A rotation or redemption carrying its audit event keeps it as long as any other.
    if isinstance(effect, (RotateRefreshToken, RedeemCode)) and effect.event is not None:
        # (A store operation is made an attrs class by its decorator, unseen by mypy.)
        return cast(StoreEffect[Any], attrs.evolve(cast(Any, effect), keep_until=effect.event.at + retention))
    return effect


def _no_documents(effect: FetchClientMetadata) -> HttpResponse:
    raise FetchFailed("client metadata documents are not enabled on this server")


async def _no_documents_async(effect: FetchClientMetadata) -> HttpResponse:
    return _no_documents(effect)


def _no_keys(effect: ResolveKeys) -> Flow[Any]:
    raise FetchFailed("no public keys are fetched by this server")
    yield


# A limiter belongs to one event loop: each run (asyncio or trio) gets its own
# per connection pool (a SQL store's engine), shared by every app using it.
_STORE_LIMITERS: RunVar[weakref.WeakKeyDictionary[Any, anyio.CapacityLimiter]] = RunVar("store_limiters")


def _store_limiter(pool: Any, slots: int | None) -> anyio.CapacityLimiter | None:
    """The limiter of ``pool`` (what the store's calls share: its traits'
    ``pool``, else the store) in this event loop. None: anyio's default
    bound (no bound of the store's own, or a pool that cannot key a weak
    dictionary)."""
    if slots is None or slots < 1:
        return None
    try:
        limiters = _STORE_LIMITERS.get()
    except LookupError:
        limiters = weakref.WeakKeyDictionary()
        _STORE_LIMITERS.set(limiters)
    try:
        limiter = limiters.get(pool)
        if limiter is None:
            limiter = limiters[pool] = anyio.CapacityLimiter(slots)
    except TypeError:
        return None
    return limiter


def sync_performer(
    store: Store,
    fetch: SyncFetch,
    sleep: Callable[[float], None] = time.sleep,
    fetch_document: SyncDocumentFetch = _no_documents,
    audit: Callable[[Audit], None] = log_audit,
    audit_retention: int = AUDIT_RETENTION,
    resolve_keys: KeyResolver = _no_keys,
) -> Callable[[Effect], Any]:
    def perform(effect: Effect) -> Any:
        if isinstance(effect, StoreEffect):
            effect = _retained(effect, audit_retention)
            try:
                return metrics.timed_store_call(effect.method, lambda: effect.apply(store))
            except StorageUnavailable as failure:
                _noted(failure, effect)
                raise
        if isinstance(effect, Fetch):
            started = time.perf_counter()
            try:
                answer = fetch(effect.request)
            except FetchFailed:
                _count_fetch(effect, started, None)
                raise
            _count_fetch(effect, started, answer)
            return answer
        if isinstance(effect, FetchClientMetadata):
            try:
                document = fetch_document(effect)
            except (FetchFailed, TooManyFetches) as failure:
                _count_document(failure)
                raise
            _count_document(None)
            return document
        if isinstance(effect, ResolveKeys):
            return run_sync(resolve_keys(effect), perform)
        if isinstance(effect, Audit):
            audit(effect)
            return None if effect.kept else perform(recorded(effect, audit_retention))
        if isinstance(effect, Sleep):
            return sleep(effect.seconds)
        raise TypeError(f"unknown effect {effect!r}")

    return perform


def async_performer(
    store: Store,
    fetch: AsyncFetch,
    *,
    store_blocks: bool | None = None,
    fetch_document: AsyncDocumentFetch = _no_documents_async,
    audit: Callable[[Audit], None] = log_audit,
    audit_retention: int = AUDIT_RETENTION,
    resolve_keys: KeyResolver = _no_keys,
) -> Callable[[Effect], Awaitable[Any]]:
    """Store calls as the store's traits (core/store.py) say: one that
    ``blocks`` (SQL backends) runs in a worker thread, so it does not block
    the event loop (``store_blocks`` overrides the traits); the memory store
    need not. No more run at once than its ``concurrency`` (its pooled
    connections; else anyio's default of 40), one limiter per ``pool``, so
    a busy server reuses its connections. A store with a ``timeout`` is
    given that many seconds per call, its thread left behind after them:
    its driver's own timeouts may fall short (a database that takes the
    bytes and never answers), and the request must not wait for ever."""
    traits = traits_of(store)
    blocks = traits.blocks if store_blocks is None else store_blocks
    slots, deadline = traits.concurrency, traits.timeout
    pool = store if traits.pool is None else traits.pool

    async def perform(effect: Effect) -> Any:
        if isinstance(effect, StoreEffect):
            effect = _retained(effect, audit_retention)
            if not blocks:
                return effect.apply(store)
            started = time.perf_counter()
            with anyio.move_on_after(deadline):
                try:
                    return await anyio.to_thread.run_sync(effect.apply, store, abandon_on_cancel=True,
                                                          limiter=_store_limiter(pool, slots))
                except StorageUnavailable as failure:
                    _noted(failure, effect)
                    raise
                finally:
                    metrics.store_seconds.labels(effect.method).observe(time.perf_counter() - started)
            raise _noted(StorageUnavailable(f"the database did not answer within {deadline:g} s"), effect)
        if isinstance(effect, Fetch):
            started = time.perf_counter()
            try:
                answer = await fetch(effect.request)
            except FetchFailed:
                _count_fetch(effect, started, None)
                raise
            _count_fetch(effect, started, answer)
            return answer
        if isinstance(effect, FetchClientMetadata):
            try:
                document = await fetch_document(effect)
            except (FetchFailed, TooManyFetches) as failure:
                _count_document(failure)
                raise
            _count_document(None)
            return document
        if isinstance(effect, ResolveKeys):
            return await run_async(resolve_keys(effect), perform)
        if isinstance(effect, Audit):
            audit(effect)
            return None if effect.kept else await perform(recorded(effect, audit_retention))
        if isinstance(effect, Sleep):
            return await anyio.sleep(effect.seconds)
        raise TypeError(f"unknown effect {effect!r}")

    return perform
