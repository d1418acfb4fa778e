"""Prometheus metrics of this process (``prometheus_client``), served at
``/metrics`` on the admin listener only. Each replica counts its own; a
Prometheus server adds them up.

Labels never carry a token, a user id or a client-supplied string of
unbounded variety: a tenant's slug (the operator's), an endpoint's name (a
fixed set), a status, an outcome, an event name (ours). Where the guard
counts, on every request, the labelled child is looked up once and kept
(:func:`_child`), so counting is one locked addition."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

T = TypeVar("T")

REGISTRY = CollectorRegistry(auto_describe=True)
_P = "mcp_oauth_proxy_"

requests = Counter(_P + "requests", "Requests to the OAuth endpoints and metadata, by tenant, endpoint and status",
                   ["tenant", "endpoint", "status"], registry=REGISTRY)
guard_decisions = Counter(_P + "guard_decisions", "The guard's decisions on requests to protected resources",
                          ["tenant", "decision"], registry=REGISTRY)
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
token_cache = Counter(_P + "token_cache_lookups", "Access-token lookups answered from memory (hit) or not (miss)",
                      ["result"], registry=REGISTRY)

_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    """The metric's child for these labels, looked up once."""
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


_DECISIONS = {None: "allowed", 401: "unauthorized", 403: "forbidden", 503: "unavailable"}
# The guard's children by (tenant, status): one dict read on its hot path.
_guard_children: dict[tuple[str, int | None], Any] = {}


def guard_decision(tenant: str, status: int | None) -> None:
    """``status`` None: let in; else the status the guard answered."""
    child = _guard_children.get((tenant, status))
    if child is None:
        decision = _DECISIONS.get(status) or str(status)
        child = _guard_children[(tenant, status)] = guard_decisions.labels(tenant, decision)
    child.inc()


def request(tenant: str, endpoint: str, status: int) -> None:
    _child(requests, tenant, endpoint, str(status)).inc()
    if status == 429:
        _child(rate_limited, tenant, endpoint).inc()


_HIT, _MISS = token_cache.labels("hit"), token_cache.labels("miss")


def cache_lookup(hit: bool) -> None:
    (_HIT if hit else _MISS).inc()


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
