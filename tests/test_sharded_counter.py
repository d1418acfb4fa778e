"""The guard's lock-free counters (metrics._ShardedCounter): every thread's
additions are counted, none lost, a finished thread's kept, and a server
that starts a thread per request keeps no dict per thread it ever ran."""

from __future__ import annotations

import _thread
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

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
    assert list(counter._live.values()) == [counter._local.shard.counts]


def test_a_thread_per_request_leaves_no_dict_per_thread() -> None:
    counter = _ShardedCounter("t_lookups", "test", ("result",))
    for _ in range(200):
        _run_threads(counter, 1, 1, ("hit",))
    assert len(counter._live) <= 1  # at most the last one, if it registered before the one before it ended
    assert counter.totals() == {("hit",): 200}


def test_threads_not_made_by_threading_leave_no_dict_either() -> None:
    # Their threading.Thread (a dummy) is "alive" for ever, as a gevent
    # greenlet's is: what ends is their thread-local, and the counts go with it.
    counter = _ShardedCounter("t_raw", "test", ("result",))
    for _ in range(300):
        done = threading.Event()

        def count() -> None:
            counter.inc(("miss",))
            done.set()

        _thread.start_new_thread(count, ())
        done.wait()
    _wait_for(lambda: counter.totals() == {("miss",): 300} and len(counter._live) == 0)


def _wait_for(condition: Callable[[], bool]) -> None:
    # A raw thread's locals are cleared just after it returns: wait for the last one.
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "the ended threads' counts were not folded"
        time.sleep(0.01)


def test_it_is_exposed_as_a_prometheus_counter() -> None:
    registry = CollectorRegistry()
    counter = _ShardedCounter("t_guard", "what the guard decided", ("tenant", "decision"))
    registry.register(counter)
    counter.inc(("acme", "forbidden"))
    counter.inc(("acme", "forbidden"))
    text = generate_latest(registry).decode()
    assert "# TYPE t_guard_total counter" in text
    assert 't_guard_total{decision="forbidden",tenant="acme"} 2.0' in text


def test_a_thread_still_counting_at_exit_loses_nothing(tmp_path: Path) -> None:
    # At exit its counts must not be folded (and its dict let go) while it goes on counting.
    script = tmp_path / "exiting.py"
    script.write_text(textwrap.dedent("""
        import atexit, threading, time
        from mcp_oauth_proxy.metrics import _ShardedCounter
        counter = _ShardedCounter("t_exit", "test", ("result",))
        counted = [0]
        stop = threading.Event()
        def at_exit():
            counter.totals()  # a scrape at exit
            time.sleep(0.2)
            stop.set()
            worker.join()
            print(sum(counter.totals().values()) == counted[0], counted[0])
        atexit.register(at_exit)
        def count():
            while not stop.is_set():
                counter.inc(("hit",))
                counted[0] += 1
                time.sleep(0.001)
        worker = threading.Thread(target=count, daemon=True)
        worker.start()
        time.sleep(0.2)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("True "), done.stdout + done.stderr
