"""Beside the server: removing expired records (sessions, codes, tokens,
lapsed registrations, rate-limit counters; each batch one short call of
``Store.delete_expired`` in a worker thread, so requests keep flowing between
batches), following what other processes revoke, and the directory of
tenants the database keeps (what any process changed is served here within
about a second)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import anyio
import anyio.to_thread

from .core.errors import StorageUnavailable
from .core.store import Store
from .directory import Directory
from .logs import Throttled
from .storage.token_cache import TokenCache

log = logging.getLogger("mcp_oauth_proxy")
T = TypeVar("T")
_reload_failed = Throttled(log, logging.WARNING, interval=60.0)


def collect(store: Store, now: int, batch: int, progress: Callable[[int], None] = lambda n: None) -> int:
    """Remove every record expired by ``now``, ``batch`` of each kind at a time."""
    total = 0
    while True:
        removed: int = store.delete_expired(now, batch)
        total += removed
        progress(removed)
        if removed == 0:
            return total


async def collect_periodically(store: Store, interval: float, batch: int,
                               clock: Callable[[], float] = time.time) -> None:
    """Every ``interval`` seconds, until cancelled."""
    while True:
        await anyio.sleep(interval)
        try:
            removed = await anyio.to_thread.run_sync(collect, store, int(clock()), batch)
        except StorageUnavailable:
            log.warning("expired records were not removed: the database is unavailable; trying again later")
            continue
        if removed:
            log.info("removed %d expired records", removed)


# Seconds of revocations read again on each look: one recorded by a
# transaction that began before the last look, or by a replica whose clock
# runs behind ours, is seen all the same (forgetting twice is harmless).
OVERLAP = 30


class Turns:
    """The looks that follow other processes (revocations, the directory),
    one at a time: they share one pooled database connection instead of
    each opening its own."""

    def __init__(self) -> None:
        self._lock: anyio.Lock | None = None

    async def run(self, func: Callable[..., T], *args: object) -> T:
        if self._lock is None:  # made in the event loop that uses it
            self._lock = anyio.Lock()
        async with self._lock:
            return await anyio.to_thread.run_sync(func, *args)


class Wake:
    """A follower's pause between looks, cut short when another process
    announces a change it follows (a PostgreSQL notice, relay_notices)."""

    def __init__(self) -> None:
        self._rung: anyio.Event | None = None

    async def pause(self, seconds: float) -> None:
        if self._rung is None:  # made in the event loop that uses it
            self._rung = anyio.Event()
        with anyio.move_on_after(seconds):
            await self._rung.wait()
        # Anything announced from here on is seen by the look that follows,
        # or ends the next pause at once.
        self._rung = anyio.Event()

    def ring(self) -> None:
        if self._rung is not None:
            self._rung.set()


async def relay_notices(notices: Callable[[float], set[str]], wakes: Mapping[str, Wake],
                        retry: float = 5.0) -> None:
    """Until cancelled: each announced topic wakes its follower. While the
    database is away the followers keep their own pace (a look a second)."""
    while True:
        try:
            topics = await anyio.to_thread.run_sync(notices, 1.0, abandon_on_cancel=True)
        except StorageUnavailable:
            await anyio.sleep(retry)
            continue
        for topic in topics:
            wake = wakes.get(topic)
            if wake is not None:
                wake.ring()


async def _unshared(func: Callable[..., T], *args: object) -> T:
    return await anyio.to_thread.run_sync(func, *args)


async def follow_revocations(cache: TokenCache, interval: float = 1.0,
                             clock: Callable[[], float] = time.time, turns: Turns | None = None,
                             wake: Wake | None = None) -> None:
    """Every ``interval`` seconds, or when ``wake`` rings, until cancelled:
    what any process sharing the store revoked is forgotten by this one's
    token cache."""
    run = _unshared if turns is None else turns.run
    pause = anyio.sleep if wake is None else wake.pause
    since = int(clock()) - OVERLAP
    lost = False
    while True:
        await pause(interval)
        started = int(clock())
        try:
            revoked = await run(cache.store.revocations_since, since)
        except StorageUnavailable:
            lost = True  # the database is away; the guard answers 503 meanwhile
            continue
        if lost:
            # A look missed may have been longer than the record is kept.
            cache.forget_all()
            lost = False
        cache.follow(revoked)
        since = started - OVERLAP


async def follow_directory(directory: Directory, interval: float = 1.0, turns: Turns | None = None,
                           wake: Wake | None = None, least: float = 1.0) -> None:
    """Every ``interval`` seconds, or when ``wake`` rings, until cancelled:
    the tenant directory's source is asked its version (one row of the
    database) and, once it moved, its tenants swapped in (Directory.refresh,
    in a worker thread), at most once every ``least`` seconds: any
    organization's admin may change something as often as it likes, and
    each change is a reload of every server on every replica. A failed look
    keeps the tenants served until the next."""
    pause = anyio.sleep if wake is None else wake.pause
    while True:
        await pause(interval)
        try:
            changed = await (_unshared if turns is None else turns.run)(directory.refresh)
        except StorageUnavailable:
            continue  # the database is away; the requests that need it answer 503 meanwhile
        except Exception as error:  # noqa: BLE001 - a record that does not open, say: keep serving the last set
            _reload_failed("the tenant directory was not reloaded (%s: %s); trying again", type(error).__name__, error)
            continue
        if changed:
            log.info("serving %d tenant(s): directory version %d", len(directory.current.entries),
                     directory.current.version)
            await anyio.sleep(least)
