"""A fresh upstream access token for the MCP server behind us, with
refreshes that do not fight (one lease holder; the others wait for it)."""

from __future__ import annotations

import pytest

from support import Harness
from mcp_oauth_proxy.core.effects import (
    ClaimUpstreamRefresh,
    Fetch,
    GetGrant,
    Sleep,
    UpdateUpstreamTokens,
    run_sync,
)
from mcp_oauth_proxy.core.errors import InvalidToken, UpstreamUnavailable
from mcp_oauth_proxy.core.flows.upstream_token import WAIT_STEPS, fresh_upstream_token
from mcp_oauth_proxy.core.http import HttpResponse
from test_races import Stepper


def _grant_id(h: Harness) -> str:
    return next(iter(h.store._grants.values()))[0].grant_id


def _fresh(h: Harness) -> str:
    return run_sync(fresh_upstream_token(_grant_id(h), h.ctx()), h.perform())


def test_unexpired_upstream_token_is_returned_without_a_call():
    h = Harness()
    h.tokens()
    sent = len(h.idp.sent)
    assert _fresh(h) == "upstream-at-1"
    assert len(h.idp.sent) == sent


def test_upstream_token_without_expiry_is_used_as_is():
    h = Harness()
    h.idp.expires_in = None
    h.tokens()
    h.now += 10**6
    assert _fresh(h) == "upstream-at-1"


def test_expired_upstream_token_is_refreshed_and_stored_encrypted():
    h = Harness()
    h.tokens()
    h.now += 3600
    assert _fresh(h) == "upstream-at-2"
    assert _fresh(h) == "upstream-at-2"  # stored: no second refresh
    assert sum(b"refresh_token" in r.body for r in h.idp.sent) == 1
    assert "upstream-at-2" not in h.store.dump() and "upstream-rt-2" not in h.store.dump()


def test_refresh_without_new_refresh_token_keeps_the_old_one():
    h = Harness()
    h.tokens()
    h.now += 3600
    h.idp.fail = lambda r: HttpResponse(200, (), b'{"access_token": "fresh", "expires_in": 60}') if b"refresh_token" in r.body else None
    assert _fresh(h) == "fresh"
    grant = h.store.get_grant("acme", _grant_id(h))
    assert grant.upstream.refresh_token == "upstream-rt-1" and grant.upstream_version == 1


def test_upstream_refusing_the_refresh_ends_the_grant():
    h = Harness()
    _, tokens = h.tokens()
    h.now += 3600
    h.idp.fail = lambda r: HttpResponse(400, (), b'{"error": "invalid_grant"}')
    with pytest.raises(InvalidToken):
        _fresh(h)
    assert h.store.get_grant("acme", _grant_id(h)) is None


def test_upstream_down_during_refresh_releases_the_lease_and_keeps_the_grant():
    h = Harness()
    h.tokens()
    h.now += 3600
    h.idp.fail = lambda r: HttpResponse(502, (), b"")
    with pytest.raises(UpstreamUnavailable):
        _fresh(h)
    h.idp.fail = None
    assert _fresh(h) == "upstream-at-2"  # lease released: the retry refreshes


def test_no_upstream_refresh_token_means_sign_in_again():
    h = Harness()
    h.tokens()
    h.now += 3600
    grant_id = _grant_id(h)
    grant, sealed = h.store._grants[("acme", grant_id)]
    import attrs
    from mcp_oauth_proxy.storage.crypto import open_upstream, seal_upstream

    tokens = attrs.evolve(open_upstream(h.store.keyring, "acme", grant_id, sealed), refresh_token=None)
    h.store._grants[("acme", grant_id)] = (grant, seal_upstream(h.store.keyring, "acme", grant_id, tokens))
    with pytest.raises(InvalidToken):
        _fresh(h)


def test_two_concurrent_refreshes_only_one_calls_upstream_the_other_waits():
    h = Harness()
    h.tokens()
    h.now += 3600
    grant_id = _grant_id(h)
    a = Stepper(h, fresh_upstream_token(grant_id, h.ctx())).start().run_until(ClaimUpstreamRefresh)
    b = Stepper(h, fresh_upstream_token(grant_id, h.ctx())).start().run_until(ClaimUpstreamRefresh)
    a.step()
    assert isinstance(a.effect, Fetch)  # A won the lease
    b.step()
    assert isinstance(b.effect, Sleep)  # B lost it and waits
    b.step()
    assert isinstance(b.effect, GetGrant)
    b.step()
    assert isinstance(b.effect, Sleep)  # A has not finished yet
    a.run_until(UpdateUpstreamTokens)
    assert a.finish() == "upstream-at-2"
    assert b.finish() == "upstream-at-2"
    assert sum(b"refresh_token" in r.body for r in h.idp.sent) == 1


def test_a_waiter_gives_up_with_temporarily_unavailable():
    h = Harness()
    h.tokens()
    h.now += 3600
    grant_id = _grant_id(h)
    a = Stepper(h, fresh_upstream_token(grant_id, h.ctx())).start().run_until(ClaimUpstreamRefresh)
    a.step()  # A holds the lease and never finishes
    with pytest.raises(UpstreamUnavailable):
        run_sync(fresh_upstream_token(grant_id, h.ctx()), h.perform())
    sleeps = []
    perform = h.perform()
    run = fresh_upstream_token(grant_id, h.ctx())

    def counting(effect):
        if isinstance(effect, Sleep):
            sleeps.append(effect.seconds)
        return perform(effect)

    with pytest.raises(UpstreamUnavailable):
        run_sync(run, counting)
    assert len(sleeps) == WAIT_STEPS


def test_revoked_grant_gives_invalid_token():
    h = Harness()
    h.tokens()
    grant_id = _grant_id(h)
    h.store.revoke_grant("acme", grant_id)
    with pytest.raises(InvalidToken):
        _fresh(h)
