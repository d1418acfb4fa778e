"""Removing expired records while the server runs: sessions, codes, tokens,
lapsed registrations and rate-limit counters. Each batch is one short call
of ``Store.delete_expired`` in a worker thread, so requests keep flowing
between batches."""

from __future__ import annotations

import logging
import time
from typing import Callable

import anyio
import anyio.to_thread

from .core.errors import StorageUnavailable
from .core.store import Store

log = logging.getLogger("mcp_oauth_proxy")


def collect(store: Store, now: int, batch: int) -> int:
    """Remove every record expired by ``now``, ``batch`` of each kind at a time."""
    total = 0
    while True:
        removed = store.delete_expired(now, batch)
        total += removed
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
