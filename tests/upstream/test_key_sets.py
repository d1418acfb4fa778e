"""The key sets' cache (upstream/key_sets.py): where an issuer's keys are
found, how long they are kept, and what a failure does."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mcp_oauth_proxy.core.effects import Fetch, ResolveKeys, run_sync
from mcp_oauth_proxy.core.errors import FetchFailed
from mcp_oauth_proxy.core.http import HttpResponse
from mcp_oauth_proxy.upstream.key_sets import FAILED_FOR, KEYS_TTL, REFETCH_AFTER, KeySets, metadata_urls

KEY = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "a"}


class Web:
    def __init__(self, documents: dict[str, Any]) -> None:
        self.documents = documents
        self.fetched: list[str] = []

    def __call__(self, effect: Any) -> HttpResponse:
        assert isinstance(effect, Fetch)
        url = effect.request.url
        self.fetched.append(url)
        if url not in self.documents:
            return HttpResponse(404, (), b"")
        return HttpResponse(200, (), json.dumps(self.documents[url]).encode())


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_metadata_is_looked_for_as_oidc_then_as_rfc_8414_with_the_path_inserted():
    assert metadata_urls("https://idp.example/tenant/") == (
        "https://idp.example/tenant/.well-known/openid-configuration",
        "https://idp.example/.well-known/oauth-authorization-server/tenant")


def test_an_issuers_keys_are_found_through_rfc_8414_metadata_too():
    web = Web({"https://idp.example/.well-known/oauth-authorization-server/t": {
        "issuer": "https://idp.example/t", "jwks_uri": "https://idp.example/keys"},
        "https://idp.example/keys": {"keys": [KEY]}})
    assert run_sync(KeySets().resolve(ResolveKeys("https://idp.example/t", discover=True)), web) == [KEY]


@pytest.mark.parametrize("metadata", [
    {"issuer": "https://other.example", "jwks_uri": "https://idp.example/keys"},  # RFC 8414 §3.3
    {"issuer": "https://idp.example"},
    {"issuer": "https://idp.example", "jwks_uri": "javascript:x"},
])
def test_metadata_of_another_issuer_or_without_keys_gives_none(metadata):
    web = Web({"https://idp.example/.well-known/openid-configuration": metadata,
               "https://idp.example/keys": {"keys": [KEY]}})
    with pytest.raises(FetchFailed):
        run_sync(KeySets().resolve(ResolveKeys("https://idp.example", discover=True)), web)
    assert "https://idp.example/keys" not in web.fetched


def test_keys_are_kept_then_fetched_again_and_a_failure_is_remembered():
    clock = Clock()
    sets = KeySets(clock=clock)
    web = Web({"https://k.example/jwks": {"keys": [KEY]}})
    get = ResolveKeys("https://k.example/jwks")
    assert run_sync(sets.resolve(get), web) == [KEY]
    clock.now += KEYS_TTL - 1
    assert run_sync(sets.resolve(get), web) == [KEY] and len(web.fetched) == 1
    clock.now += 1
    assert run_sync(sets.resolve(get), web) == [KEY] and len(web.fetched) == 2
    # Gone: the keys found before are kept, and it is not asked again for a while.
    del web.documents["https://k.example/jwks"]
    clock.now += REFETCH_AFTER
    assert run_sync(sets.resolve(ResolveKeys("https://k.example/jwks", refresh=True)), web) == [KEY]
    fresh = KeySets(clock=clock)
    with pytest.raises(FetchFailed):
        run_sync(fresh.resolve(get), web)
    with pytest.raises(FetchFailed):
        run_sync(fresh.resolve(get), web)
    assert web.fetched.count("https://k.example/jwks") == 4
    clock.now += FAILED_FOR
    web.documents["https://k.example/jwks"] = {"keys": [KEY]}
    assert run_sync(fresh.resolve(get), web) == [KEY]


def test_a_document_that_is_no_key_set_is_refused():
    web = Web({"https://k.example/jwks": {"keys": "nope"}})
    with pytest.raises(FetchFailed):
        run_sync(KeySets().resolve(ResolveKeys("https://k.example/jwks")), web)


def test_one_fetch_per_location_at_a_time_and_a_few_in_all():
    """A slow signer's keys asked for by many requests at once: one fetch
    (the others are refused at once, not queued on the upstream pool), and
    no more than MAX_FETCHING locations fetched at once in all."""
    from mcp_oauth_proxy.upstream.key_sets import FETCH_ALONE, MAX_FETCHING

    clock = Clock()
    sets = KeySets(clock)
    held = sets.resolve(ResolveKeys("https://slow.example/keys", discover=False))
    assert isinstance(next(held), Fetch)  # under way, not answered yet
    with pytest.raises(FetchFailed):
        run_sync(sets.resolve(ResolveKeys("https://slow.example/keys", discover=False)), Web({}))
    others = []
    for i in range(MAX_FETCHING - 1):
        flow = sets.resolve(ResolveKeys(f"https://slow{i}.example/keys", discover=False))
        next(flow)
        others.append(flow)
    with pytest.raises(FetchFailed):  # the cap, for a location nobody fetches
        run_sync(sets.resolve(ResolveKeys("https://another.example/keys", discover=False)), Web({}))
    held.close()  # the request left: its claim goes
    web = Web({"https://another.example/keys": {"keys": [KEY]}})
    assert run_sync(sets.resolve(ResolveKeys("https://another.example/keys", discover=False)), web) == [KEY]
    # A fetch that never ends stops counting after FETCH_ALONE.
    clock.now += FETCH_ALONE + 1
    web = Web({"https://slow0.example/keys": {"keys": [KEY]}})
    assert run_sync(sets.resolve(ResolveKeys("https://slow0.example/keys", discover=False)), web) == [KEY]
    for flow in others:
        flow.close()


def test_one_organization_holds_few_of_the_fetches_at_once():
    # A review: one organization's eight slow jwks_uri held every fetch of
    # the process, and another organization's new client could not sign in.
    from mcp_oauth_proxy.upstream.key_sets import MAX_FETCHING_PER_ORGANIZATION

    sets = KeySets(Clock())
    held = []
    for i in range(MAX_FETCHING_PER_ORGANIZATION):
        flow = sets.resolve(ResolveKeys(f"https://slow{i}.acme.example/keys", public_only="acme"))
        assert isinstance(next(flow), Fetch)
        held.append(flow)
    more = Web({"https://more.acme.example/keys": {"keys": [KEY]}})
    with pytest.raises(FetchFailed):
        run_sync(sets.resolve(ResolveKeys("https://more.acme.example/keys", public_only="acme")), more)
    assert more.fetched == []  # refused before it was fetched
    web = Web({"https://beta.example/keys": {"keys": [KEY]}})
    assert run_sync(sets.resolve(ResolveKeys("https://beta.example/keys", public_only="beta")), web) == [KEY]
    web = Web({"https://ours.example/keys": {"keys": [KEY]}})
    assert run_sync(sets.resolve(ResolveKeys("https://ours.example/keys")), web) == [KEY]
    for flow in held:
        flow.close()
