"""The guard's short memory of found access tokens (storage/token_cache.py):
it spares the database, and every revocation through it bites at once."""

from __future__ import annotations

from support import Harness
from mcp_oauth_proxy.core.context import token_hash
from mcp_oauth_proxy.storage.memory import MemoryStore
from mcp_oauth_proxy.storage.token_cache import TokenCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    def get_access_token(self, tenant, token_hash):
        self.lookups += 1
        return super().get_access_token(tenant, token_hash)


def _cached(ttl: float = 5.0):
    clock = Clock()
    inner = CountingStore()
    cache = TokenCache(inner, ttl, clock=clock)
    return Harness(store=cache), inner, clock  # type: ignore[arg-type]


def test_a_found_token_is_remembered_for_the_ttl_only():
    h, inner, clock = _cached()
    _, tokens = h.tokens()
    key = token_hash(tokens["access_token"])
    h.store.get_access_token("acme", key)
    h.store.get_access_token("acme", key)
    assert inner.lookups == 1
    clock.now += 5
    h.store.get_access_token("acme", key)
    assert inner.lookups == 2


def test_unknown_tokens_are_never_remembered():
    h, inner, _ = _cached()
    assert h.store.get_access_token("acme", "nope") is None
    assert h.store.get_access_token("acme", "nope") is None
    assert inner.lookups == 2


def test_revocations_through_the_cache_bite_at_once():
    h, inner, _ = _cached()
    client, tokens = h.tokens()
    assert h.guard(tokens["access_token"]).user_id == "user-42"  # now remembered
    h.request("POST", "https://acme.example.com/oauth/revoke",
              form={"token": tokens["access_token"], "client_id": client["client_id"]})
    assert h.guard(tokens["access_token"]).status == 401
    # Revoking the grant (by its refresh token) forgets every token of it.
    second_client, second = h.tokens()
    assert h.guard(second["access_token"]).user_id == "user-42"
    h.request("POST", "https://acme.example.com/oauth/revoke",
              form={"token": second["refresh_token"], "client_id": second_client["client_id"]})
    assert h.guard(second["access_token"]).status == 401


def test_a_replayed_code_and_a_reused_refresh_token_bite_at_once():
    h, inner, _ = _cached()
    client = h.register()
    code = h.login(client["client_id"])["code"]
    tokens = h.redeem(client["client_id"], code).json()
    assert h.guard(tokens["access_token"]).user_id == "user-42"
    h.redeem(client["client_id"], code)  # replay: the grant is revoked
    assert h.guard(tokens["access_token"]).status == 401

    client, tokens = h.tokens()
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client["client_id"]}
    fresh = h.token(form).json()
    assert h.guard(fresh["access_token"]).user_id == "user-42"
    h.now += h.tenant.policy.refresh_grace + 1
    assert h.token(form).status == 400  # reuse: the family is revoked
    assert h.guard(fresh["access_token"]).status == 401


def test_another_process_may_see_a_revoked_token_until_its_memory_lapses():
    """Two caches over one database: the documented window, and its bound."""
    shared = CountingStore()
    clock = Clock()
    a = Harness(store=TokenCache(shared, 5.0, clock=clock))  # type: ignore[arg-type]
    b_cache = TokenCache(shared, 5.0, clock=clock)
    client, tokens = a.tokens()
    key = token_hash(tokens["access_token"])
    assert b_cache.get_access_token("acme", key) is not None
    a.request("POST", "https://acme.example.com/oauth/revoke",
              form={"token": tokens["refresh_token"], "client_id": client["client_id"]})
    assert b_cache.get_access_token("acme", key) is not None  # within B's TTL
    clock.now += 5
    assert b_cache.get_access_token("acme", key) is None


def test_the_cache_is_bounded():
    clock = Clock()
    h = Harness()
    cache = TokenCache(h.store, 60, size=2, clock=clock)
    tokens = [h.tokens()[1]["access_token"] for _ in range(3)]
    for value in tokens:
        cache.get_access_token("acme", token_hash(value))
    assert len(cache._entries) == 2


def test_a_lookup_that_overlaps_a_revocation_does_not_remember_the_token():
    # A finds the token in the store; B revokes it through the cache before A
    # stores what it found: A must not bring the revoked token back.
    class Racing(MemoryStore):
        during_lookup = None

        def get_access_token(self, tenant, token_hash):
            found = super().get_access_token(tenant, token_hash)
            if self.during_lookup is not None:
                self.during_lookup, hook = None, self.during_lookup
                hook()
            return found

    inner = Racing()
    cache = TokenCache(inner, 60, clock=Clock())
    h = Harness(store=cache)  # type: ignore[arg-type]
    _, tokens = h.tokens()
    key = token_hash(tokens["access_token"])
    inner.during_lookup = lambda: cache.revoke_access_token("acme", key)
    assert cache.get_access_token("acme", key) is not None  # read before the revocation
    assert cache.remembered("acme", key) is None
    assert cache.get_access_token("acme", key) is None
