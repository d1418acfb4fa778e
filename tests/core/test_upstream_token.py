"""A fresh upstream access token for the MCP server behind us, with
refreshes that do not fight (one lease holder; the others wait for it)."""

from __future__ import annotations

import attrs
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
from mcp_oauth_proxy.core.errors import InvalidToken, OAuthError, TemporarilyUnavailable, UpstreamUnavailable
from mcp_oauth_proxy.core.flows.upstream_token import fresh, fresh_upstream_token
from mcp_oauth_proxy.core.models import UpstreamTokens
from mcp_oauth_proxy.storage.crypto import open_upstream, seal_upstream
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


def _without_refresh_token(h: Harness) -> None:
    """The grant's upstream gave no refresh token."""
    grant_id = _grant_id(h)
    grant, sealed = h.store._grants[("acme", grant_id)]
    tokens = attrs.evolve(open_upstream(h.store.keyring, "acme", grant_id, sealed), refresh_token=None)
    h.store._grants[("acme", grant_id)] = (grant, seal_upstream(h.store.keyring, "acme", grant_id, tokens))


def test_no_upstream_refresh_token_means_sign_in_again():
    h = Harness()
    h.tokens()
    h.now += 3600
    _without_refresh_token(h)
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


def test_revoked_grant_gives_invalid_token():
    h = Harness()
    h.tokens()
    grant_id = _grant_id(h)
    h.store.revoke_grant("acme", grant_id)
    with pytest.raises(InvalidToken):
        _fresh(h)


# -- short-lived upstream tokens, and many requests of one grant at once --------

T0 = 1_800_000_000


@pytest.mark.parametrize("issued_at, expires_at, now, skew, expected", [
    (T0, T0 + 3600, T0 + 3539, 60, True),   # a long-lived token: the policy's skew
    (T0, T0 + 3600, T0 + 3540, 60, False),
    (T0, T0 + 5, T0 + 2, 60, True),         # 5 s: refreshed after half its life, not always
    (T0, T0 + 5, T0 + 3, 60, False),
    (T0, T0 + 1, T0, 60, True),             # 1 s: used until it expires
    (T0, T0 + 1, T0 + 1, 60, False),
    (T0, T0 + 120, T0 + 59, 10, True),      # the skew when it is the smaller
    (T0, T0 + 120, T0 + 110, 10, False),
    (None, T0 + 3600, T0 + 3540, 60, False),  # sealed before the issue time was kept
    (None, T0 + 5, T0, 60, False),
    (T0, None, T0 + 10**6, 60, True),       # the upstream did not say: used until refused
])
def test_when_an_upstream_token_is_fresh(issued_at, expires_at, now, skew, expected):
    tokens = UpstreamTokens("at", "rt", expires_at, issued_at=issued_at)
    assert fresh(tokens, now, skew) is expected


def _refreshes(h: Harness) -> int:
    return sum(b"grant_type=refresh_token" in r.body for r in h.idp.sent)


def _short_lived(seconds: int = 5) -> Harness:
    h = Harness()
    h.idp.expires_in = seconds  # far shorter than the 60 s skew
    h.tokens()
    return h


def test_a_token_shorter_lived_than_the_skew_is_refreshed_once_per_lifetime():
    h = _short_lived()
    seen = []
    for _ in range(10):  # one request a second
        seen.append(_fresh(h))
        h.now += 1
    assert seen == [f"upstream-at-{n}" for n in (1, 1, 1, 2, 2, 2, 3, 3, 3, 4)]
    assert _refreshes(h) == 3


class Outcome:
    """A flow run by :func:`_together`: its answer, or what it raised."""

    def __init__(self, stepper: Stepper) -> None:
        self.stepper = stepper
        self.error: OAuthError | None = None

    @property
    def done(self) -> bool:
        return self.stepper.done or self.error is not None

    def step(self) -> None:
        try:
            self.stepper.step()
        except OAuthError as exc:  # the flow raised: its answer to the request
            self.error = exc

    @property
    def answer(self):
        return self.error if self.error is not None else self.stepper.result


def _together(h: Harness, grant_id: str, n: int, perform=None) -> list:
    """``n`` requests for the grant's upstream token at once: each is taken
    to the moment it asks for the refresh lease before any of them asks,
    then they take turns one effect at a time."""
    flows = []
    for _ in range(n):
        stepper = Stepper(h, fresh_upstream_token(grant_id, h.ctx()))
        if perform is not None:
            stepper.perform = perform
        flows.append(Outcome(stepper.start().run_until(ClaimUpstreamRefresh)))
    while not all(f.done for f in flows):
        for f in flows:
            if not f.done:
                f.step()
    return [f.answer for f in flows]


@pytest.mark.parametrize("age", [3, 10], ids=["due-not-expired", "expired"])
def test_requests_at_once_on_a_token_shorter_than_the_skew_all_get_one_refreshed_token(age):
    h = _short_lived()
    h.now += age
    assert _together(h, _grant_id(h), 6) == ["upstream-at-2"] * 6
    assert _refreshes(h) == 1


def test_when_the_lease_holder_dies_the_others_take_over_once_its_lease_expires():
    h = _short_lived()
    h.now += 10
    grant_id = _grant_id(h)
    dead = Stepper(h, fresh_upstream_token(grant_id, h.ctx())).start().run_until(ClaimUpstreamRefresh)
    dead.step()
    assert isinstance(dead.effect, Fetch)  # it holds the lease, and is never heard of again
    lease_until = h.store.get_grant("acme", grant_id).refresh_lease_until
    assert lease_until == h.now + h.tenant.policy.upstream_refresh_lease

    # What each waiter asked of the store, and when it believed it was.
    claims: list[ClaimUpstreamRefresh] = []
    slept = [0.0]
    perform = h.perform()

    def watching(effect):
        if isinstance(effect, Sleep):
            slept[0] += effect.seconds
        if isinstance(effect, ClaimUpstreamRefresh):
            claims.append(effect)
        return perform(effect)

    assert _together(h, grant_id, 4, watching) == ["upstream-at-2"] * 4
    assert _refreshes(h) == 1
    # None claimed the lease before it expired; each one's clock ran no
    # faster than the time it had waited.
    takeover = [c for c in claims if c.now >= lease_until]
    assert takeover and all(c.now <= h.now + slept[0] for c in claims)
    assert h.store.get_grant("acme", grant_id).refresh_lease_until is None


def test_a_waiter_that_gives_up_answers_503_with_a_short_retry_after():
    h = _short_lived()
    h.now += 10
    grant_id = _grant_id(h)
    perform = h.perform()

    def always_taken(effect):
        # Whenever the lease is free, someone else takes it (and never finishes).
        if isinstance(effect, ClaimUpstreamRefresh):
            assert h.store.claim_upstream_refresh(effect.tenant, effect.grant_id, effect.version, effect.now,
                                                  effect.lease_until)
        return perform(effect)

    with pytest.raises(TemporarilyUnavailable) as caught:
        run_sync(fresh_upstream_token(grant_id, h.ctx()), always_taken)
    assert caught.value.status == 503 and caught.value.error == "temporarily_unavailable"
    assert 1 <= int(dict(caught.value.headers)["retry-after"]) <= 5
    assert _refreshes(h) == 0


def test_when_the_holders_refresh_fails_its_waiters_fail_with_it_without_asking_again():
    h = _short_lived()
    h.now += 10
    h.idp.fail = lambda r: HttpResponse(503, (), b"") if b"grant_type=refresh_token" in r.body else None
    answers = _together(h, _grant_id(h), 4)
    assert all(isinstance(a, UpstreamUnavailable) for a in answers), answers
    assert _refreshes(h) == 1
    h.idp.fail = None
    assert _fresh(h) == "upstream-at-2"  # the next request refreshes


def test_without_a_refresh_token_the_token_is_used_until_it_expires():
    h = Harness()
    h.tokens()
    _without_refresh_token(h)
    h.now += 3600 - 10  # within the skew: it cannot be refreshed, and it still works
    assert _fresh(h) == "upstream-at-1"
    h.now += 10
    with pytest.raises(InvalidToken):
        _fresh(h)
