"""The guard's lock-free counters (metrics._ShardedCounter): every thread's
additions are counted, none lost, a finished thread's kept, and a server
that starts a thread per request keeps no dict per thread it ever ran."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, generate_latest

from mcp_oauth_proxy.metrics import _ShardedCounter


def _run_threads(counter: _ShardedCounter, threads: int, each: int, labels: tuple[str, ...]) -> None:
    start = threading.Barrier(threads)

    def count() -> None:
        start.wait()  # all at once: the most chance of a lost addition, were there one
        for _ in range(each):
            counter.inc(labels)

    workers = [threading.Thread(target=count) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def test_every_threads_additions_are_summed_and_outlive_the_thread() -> None:
    counter = _ShardedCounter("t_decisions", "test", ("tenant", "decision"))
    counter.inc(("acme", "allowed"))
    _run_threads(counter, 8, 20_000, ("acme", "allowed"))
    _run_threads(counter, 2, 5, ("globex", "unauthorized"))
    assert counter.totals() == {("acme", "allowed"): 160_001, ("globex", "unauthorized"): 10}
    # Ended threads were folded: only this one's dict is still kept apart.
    assert [thread for thread, _ in counter._shards] == [threading.current_thread()]


def test_a_thread_per_request_leaves_no_dict_per_thread() -> None:
    counter = _ShardedCounter("t_lookups", "test", ("result",))
    for _ in range(200):
        _run_threads(counter, 1, 1, ("hit",))
    assert len(counter._shards) <= 1  # at most the last one, ended since it registered
    assert counter.totals() == {("hit",): 200}


def test_it_is_exposed_as_a_prometheus_counter() -> None:
    registry = CollectorRegistry()
    counter = _ShardedCounter("t_guard", "what the guard decided", ("tenant", "decision"))
    registry.register(counter)
    counter.inc(("acme", "forbidden"))
    counter.inc(("acme", "forbidden"))
    text = generate_latest(registry).decode()
    assert "# TYPE t_guard_total counter" in text
    assert 't_guard_total{decision="forbidden",tenant="acme"} 2.0' in text
