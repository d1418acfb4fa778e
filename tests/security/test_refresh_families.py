"""Refresh token families (RFC 9700 §4.14.2): the grace window for a
client's retry must not let anyone holding a rotated token fork the family
into independent live chains."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from support import Harness
from mcp_oauth_proxy.storage.crypto import KeyRing
from mcp_oauth_proxy.storage.open import open_store


@pytest.fixture(params=["memory", "sqlite"])
def harness(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Harness]:
    if request.param == "memory":
        yield Harness()
        return
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", KeyRing.generate())
    yield Harness(store=store)
    store.engine.dispose()


def _refresh(h: Harness, client: dict[str, Any], refresh_token: str) -> Any:
    return h.token({"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client["client_id"]})


def test_a_rotated_token_replayed_within_grace_cannot_fork_the_family(harness: Harness) -> None:
    client, first = harness.tokens()
    # The holder of a rotated refresh token presents it again and again
    # within the grace window, hoping to keep several chains alive.
    successors = []
    for _ in range(5):
        answer = _refresh(harness, client, first["refresh_token"])
        assert answer.status == 200
        successors.append(answer.json()["refresh_token"])
    # Only the newest successor is live: it refreshes ...
    assert _refresh(harness, client, successors[-1]).status == 200


def test_a_successor_a_retry_replaced_is_reuse_when_presented(harness: Harness) -> None:
    client, first = harness.tokens()
    mine = _refresh(harness, client, first["refresh_token"]).json()
    # A thief with the rotated token beats the client to a "retry" within
    # grace: the client's successor is replaced by the thief's ...
    stolen = _refresh(harness, client, first["refresh_token"]).json()
    # ... and when the client next refreshes, that is a replay of the family:
    # it is revoked, the thief's tokens with it.
    replay = _refresh(harness, client, mine["refresh_token"])
    assert replay.status == 400 and "revoked" in replay.json()["error_description"]
    assert _refresh(harness, client, stolen["refresh_token"]).status == 400
    assert harness.guard(stolen["access_token"]).status == 401


def test_a_replay_after_the_family_moved_on_revokes_it_even_within_grace(harness: Harness) -> None:
    client, first = harness.tokens()
    second = _refresh(harness, client, first["refresh_token"]).json()
    third = _refresh(harness, client, second["refresh_token"]).json()
    # The first token, within its grace window, but its successor was used:
    # a thief's replay, not the client's retry.
    replay = _refresh(harness, client, first["refresh_token"])
    assert replay.status == 400 and "revoked" in replay.json()["error_description"]
    assert _refresh(harness, client, third["refresh_token"]).status == 400
    assert harness.guard(third["access_token"]).status == 401
