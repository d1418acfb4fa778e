"""Prometheus metrics of this process (``prometheus_client``), served at
``/metrics`` on the admin listener only. Each replica counts its own; a
Prometheus server adds them up.

Labels never carry a token, a user id or a client-supplied string of
unbounded variety: a tenant's slug (the operator's), an endpoint's name (a
fixed set), a status, an outcome, an event name (ours). Elsewhere the
labelled child is looked up once and kept (:func:`_child`), so counting is
one locked addition; what the guard counts on every request is a
:class:`_ShardedCounter`, counting with no lock at all."""

from __future__ import annotations

import collections
import threading
import time
import weakref
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily

T = TypeVar("T")

REGISTRY = CollectorRegistry(auto_describe=True)
_P = "mcp_oauth_proxy_"


class _Shard:
    """One thread's counts, held by its thread-local: when the thread (or
    greenlet) ends, its locals are cleared and this goes with them."""

    __slots__ = ("__weakref__", "counts")

    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], int] = {}


class _ShardedCounter:
    """A counter for the hot path: each thread adds to a dict of its own
    (only that thread writes it, so no lock and no lost addition); a scrape
    sums them. A thread's counts outlive it: when its thread-local goes
    (the thread, or a greenlet where gevent patches threads, has ended),
    they are queued, and folded into ``_retired`` when a new thread first
    counts and on each scrape. So a server that runs a thread or greenlet
    per request keeps one dict per live one, not one per one it ever ran."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self._name, self._documentation, self._labelnames = name, documentation, labelnames
        self._local = threading.local()
        self._lock = threading.Lock()  # guards _live and _retired
        self._live: dict[int, dict[tuple[str, ...], int]] = {}  # by id(): each kept alive here until folded
        # Counts of ended threads, not folded yet. Appended to by a
        # finalizer, which may run anywhere (even inside this lock): a
        # deque's append needs no lock.
        self._ended: collections.deque[dict[tuple[str, ...], int]] = collections.deque()
        self._retired: Tally[tuple[str, ...]] = Tally()

    def inc(self, labels: tuple[str, ...]) -> None:
        try:
            counts = self._local.shard.counts
        except AttributeError:
            counts = self._new_shard()
        counts[labels] = counts.get(labels, 0) + 1

    def _new_shard(self) -> dict[tuple[str, ...], int]:
        shard = self._local.shard = _Shard()
        # Not at exit: a thread still counting then would have its counts
        # folded, and what it counts after that lost.
        weakref.finalize(shard, self._ended.append, shard.counts).atexit = False
        with self._lock:
            self._fold_ended()
            self._live[id(shard.counts)] = shard.counts
        return shard.counts

    def _fold_ended(self) -> None:
        while self._ended:
            counts = self._ended.popleft()  # its thread writes it no more
            del self._live[id(counts)]
            self._retired.update(counts)

    def totals(self) -> Tally[tuple[str, ...]]:
        with self._lock:
            self._fold_ended()
            totals = Tally(self._retired)
            for counts in self._live.values():
                totals.update(counts.copy())  # one atomic copy of a dict its thread may be writing
        return totals

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for labels, value in sorted(self.totals().items()):
            family.add_metric(labels, value)
        yield family


requests = Counter(_P + "requests", "Requests to the OAuth endpoints and metadata, by tenant, endpoint and status",
                   ["tenant", "endpoint", "status"], registry=REGISTRY)
guard_decisions = _ShardedCounter(_P + "guard_decisions", "The guard's decisions on requests to protected resources",
                                  ("tenant", "decision"))
REGISTRY.register(guard_decisions)
grant_events = Counter(_P + "grant_events", "Grants issued, refreshed, revoked; refresh reuse detected (the audit "
                       "events of the OAuth flows)", ["tenant", "event"], registry=REGISTRY)
upstream_calls = Counter(_P + "upstream_calls", "Calls to upstream identity providers, by kind and outcome",
                         ["kind", "outcome"], registry=REGISTRY)
upstream_seconds = Histogram(_P + "upstream_call_seconds", "Time upstream identity providers took to answer",
                             ["kind"], registry=REGISTRY)
document_fetches = Counter(_P + "client_metadata_fetches", "Client ID Metadata Document fetches, by outcome",
                           ["outcome"], registry=REGISTRY)
store_seconds = Histogram(_P + "store_call_seconds", "Time store calls took, by operation", ["operation"],
                          registry=REGISTRY, buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
store_failures = Counter(_P + "store_failures", "Store calls that found the database unavailable",
                         ["operation"], registry=REGISTRY)
rate_limited = Counter(_P + "rate_limit_refusals", "Requests refused by a rate limit (429)", ["tenant", "endpoint"],
                       registry=REGISTRY)
token_cache = _ShardedCounter(_P + "token_cache_lookups",
                              "Access-token lookups answered from memory (hit) or not (miss)", ("result",))
REGISTRY.register(token_cache)

_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    """The metric's child for these labels, looked up once."""
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


_DECISIONS = {None: "allowed", 401: "unauthorized", 403: "forbidden", 503: "unavailable"}
# The guard's labels by (tenant, status): one dict read on its hot path.
_guard_labels: dict[tuple[str, int | None], tuple[str, str]] = {}


def guard_labels(tenant: str, status: int | None) -> tuple[str, str]:
    """The labels of a guard decision: ``status`` None: let in; else the status the guard answered."""
    labels = _guard_labels.get((tenant, status))
    if labels is None:
        labels = _guard_labels[(tenant, status)] = (tenant, _DECISIONS.get(status) or str(status))
    return labels


def guard_decision(tenant: str, status: int | None) -> None:
    """``status`` None: let in; else the status the guard answered."""
    guard_decisions.inc(guard_labels(tenant, status))


def remembered_decision(labels: tuple[str, str]) -> None:
    """A decision the guard remembered (adapters/verdicts.py), ``labels``
    its guard_labels: counted as the decision it is; one that lets a
    token in, also as the lookup from memory it stands for."""
    guard_decisions.inc(labels)
    if labels[1] == "allowed":
        token_cache.inc(_HIT)


def request(tenant: str, endpoint: str, status: int) -> None:
    _child(requests, tenant, endpoint, str(status)).inc()
    if status == 429:
        _child(rate_limited, tenant, endpoint).inc()


_HIT, _MISS = ("hit",), ("miss",)


def cache_lookup(hit: bool) -> None:
    token_cache.inc(_HIT if hit else _MISS)


def grant_event(tenant: str, event: str) -> None:
    _child(grant_events, tenant, event).inc()


def timed_store_call(operation: str, call: Callable[[], T]) -> T:
    started = time.perf_counter()
    try:
        return call()
    finally:
        _child(store_seconds, operation).observe(time.perf_counter() - started)


def upstream_call(kind: str, outcome: str, seconds: float) -> None:
    _child(upstream_calls, kind, outcome).inc()
    _child(upstream_seconds, kind).observe(seconds)


def outcome_of(status: int) -> str:
    return f"{status // 100}xx"


def exposition() -> tuple[bytes, str]:
    """The text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
