"""Races with real connections: many threads in several processes call one
store operation at the same moment (a barrier releases them together)."""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any, Sequence

import pytest
import sqlalchemy

from mcp_oauth_proxy.core.models import Rotation
from mcp_oauth_proxy.storage.crypto import KeyRing
from mcp_oauth_proxy.storage.open import open_store
from mcp_oauth_proxy.storage.schema import access_tokens, grants, refresh_tokens
from mcp_oauth_proxy.storage.sql import SqlStore, make_engine
from storage_records import T0, access, code, grant, refresh, with_tokens

PROCESSES, THREADS = 5, 10  # 50 callers


def _worker(url: str, keys: dict[str, bytes], method: str, first: int, calls: Sequence[tuple[Any, ...]],
            barrier: Any, results: Any) -> None:
    store = SqlStore(make_engine(url, pool_size=len(calls), max_overflow=0), KeyRing(keys, next(iter(keys))))
    # Connect first, so the race is between the statements, not the logins.
    for conn in [store.engine.connect() for _ in calls]:
        conn.close()
    answers: list[Any] = [None] * len(calls)

    def call(i: int) -> None:
        barrier.wait()
        try:
            answers[i] = getattr(store, method)(*calls[i])
        except Exception as error:  # reported to the parent, which fails the test
            answers[i] = f"error: {error!r}"

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put((first, answers))
    store.engine.dispose()


def race(url: str, ring: KeyRing, method: str, calls: Sequence[tuple[Any, ...]]) -> list[Any]:
    """``store.method(*call)`` for every call, all at once, spread over
    PROCESSES processes; the answers in the order of the calls."""
    mp = multiprocessing.get_context("fork")
    barrier, results = mp.Barrier(len(calls)), mp.Queue()
    share = len(calls) // PROCESSES
    workers = [
        mp.Process(target=_worker, args=(
            url, ring.raw_keys(), method, i * share, calls[i * share:(i + 1) * share], barrier, results))
        for i in range(PROCESSES)
    ]
    for w in workers:
        w.start()
    answers = [a for _, part in sorted(results.get(timeout=120) for _ in workers) for a in part]
    for w in workers:
        w.join(timeout=30)
        assert w.exitcode == 0
    assert not [a for a in answers if isinstance(a, str)], answers
    return answers


@pytest.fixture
def prepared(sql_url: str, ring: KeyRing) -> Any:
    """A migrated database with one grant and its tokens; the parent's
    connections are closed before the workers fork."""
    def prepare(*setup: Any) -> SqlStore:
        store = open_store(sql_url, ring)
        for step in setup:
            step(store)
        store.engine.dispose()
        return store

    return prepare


def test_fifty_redemptions_of_one_code_give_exactly_one_winner(prepared, sql_url, ring):
    g = grant()
    prepared(lambda s: s.save_grant_and_code(g, code(g)))
    answers = race(sql_url, ring, "take_code", [("acme", g.code_hash, T0)] * (PROCESSES * THREADS))
    assert [a for a in answers if a is not None] == [code(g)]
    assert answers.count(None) == PROCESSES * THREADS - 1


@pytest.mark.parametrize("replayed", [False, True], ids=["current-token", "rotated-token-half-late"])
def test_fifty_rotations_of_one_refresh_token_follow_the_grace_rule(prepared, sql_url, ring, replayed):
    g, grace, n = grant(), 1, PROCESSES * THREADS
    pair: list[Any] = []

    def setup(s: SqlStore) -> None:
        pair.extend(with_tokens(s, g))
        if replayed:  # first rotated at T0: callers at T0+2 are past the grace window
            assert s.rotate_refresh_token("acme", pair[1].token_hash, T0, grace, access(g, "at-first"),
                                          refresh(g, "rt-first")) is Rotation.ROTATED
            pair.append(access(g, "at-first"))

    store = prepared(setup)
    rt = pair[1]
    nows = [T0 + 1 + i % 2 if replayed else T0 for i in range(n)]
    calls = [("acme", rt.token_hash, nows[i], grace, access(g, f"at-{i}"), refresh(g, f"rt-{i}")) for i in range(n)]
    answers = race(sql_url, ring, "rotate_refresh_token", calls)

    with store.engine.connect() as conn:
        rotated_at = conn.execute(sqlalchemy.select(refresh_tokens.c.rotated_at).where(
            refresh_tokens.c.token_hash == rt.token_hash)).scalar_one()
        assert conn.execute(sqlalchemy.select(sqlalchemy.func.count()).select_from(grants)).scalar() == 1
        stored = set(conn.execute(sqlalchemy.select(access_tokens.c.token_hash)).scalars())
        unused = conn.execute(sqlalchemy.select(sqlalchemy.func.count()).select_from(refresh_tokens).where(
            refresh_tokens.c.rotated_at.is_(None))).scalar()
    store.engine.dispose()
    late = [now - rotated_at > grace for now in nows]
    assert any(late) == replayed
    for i, outcome in enumerate(answers):
        # Successors were stored by exactly the callers told ROTATED, and
        # only within grace of the one moment the token was first rotated.
        assert (outcome is Rotation.ROTATED) == (f"at-{i}" in stored)
        if outcome in (Rotation.ROTATED, Rotation.REUSED):
            assert late[i] == (outcome is Rotation.REUSED)
    assert len(stored) == len(pair) - 1 + answers.count(Rotation.ROTATED)
    # The first late caller revokes the family (the replay); every caller
    # after it finds it revoked. Without a late caller nothing is refused.
    assert answers.count(Rotation.REUSED) == (1 if any(late) else 0)
    if not any(late):
        assert answers == [Rotation.ROTATED] * n
        # However many retries raced, the family kept one live refresh token.
        assert unused == 1
    reopened = open_store(sql_url, ring)
    assert (reopened.get_grant("acme", g.grant_id) is None) == any(late)
    reopened.engine.dispose()


def test_fifty_hits_of_one_counter_count_to_fifty(prepared, sql_url, ring):
    prepared()
    n = PROCESSES * THREADS
    answers = race(sql_url, ring, "hit_counter", [("acme|token|address|10.0.0.1", T0, T0 + 60)] * n)
    assert sorted(answers) == list(range(1, n + 1))
