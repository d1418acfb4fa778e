"""Races driven deterministically, without threads: two flows advanced to
the same atomic effect, then answered in an order we choose."""

from __future__ import annotations

from typing import Any

from urllib.parse import urlencode

from support import REDIRECT, VERIFIER, Harness
from mcp_oauth_proxy.core.context import token_hash
from mcp_oauth_proxy.core.effects import Effect, GetCode, RedeemCode, RevokeGrantOfCode, RotateRefreshToken
from mcp_oauth_proxy.core.http import Request
from mcp_oauth_proxy.core.router import handle


def _token_request(form: dict[str, str]) -> Request:
    return Request("POST", "/oauth/token", headers=(("content-type", "application/x-www-form-urlencoded"),),
                   body=urlencode(form).encode())


class Stepper:
    """Runs a flow one effect at a time against the harness's store."""

    def __init__(self, h: Harness, flow) -> None:
        self.perform = h.perform()
        self.flow = flow
        self.effect: Effect | None = None
        self.result: Any = None
        self.done = False

    def start(self) -> "Stepper":
        self.effect = self.flow.send(None)
        return self

    def run_until(self, kind: type) -> "Stepper":
        """Carry out effects until the next one is of ``kind`` (not carried out)."""
        while not isinstance(self.effect, kind):
            self.step()
            assert not self.done, f"flow ended before {kind.__name__}"
        return self

    def step(self) -> None:
        try:
            self.effect = self.flow.send(self.perform(self.effect))
        except StopIteration as stop:
            self.done, self.result = True, stop.value

    def finish(self):
        while not self.done:
            self.step()
        return self.result


def _code_form(h: Harness) -> dict[str, str]:
    """A token request redeeming a fresh code of a newly registered client."""
    client = h.register()
    code = h.login(client["client_id"])["code"]
    return {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "code_verifier": VERIFIER, "client_id": client["client_id"]}


def _parked_at(h: Harness, form: dict[str, str], kind: type) -> tuple[Stepper, Stepper]:
    """Two token flows of the same request, each stopped just before ``kind``."""
    def parked() -> Stepper:
        return Stepper(h, handle(_token_request(form), h.ctx())).start().run_until(kind)

    return parked(), parked()


def test_two_redemptions_of_one_code_exactly_one_gets_tokens_and_they_are_revoked():
    h = Harness()
    a, b = _parked_at(h, _code_form(h), RedeemCode)
    # Both read the code and passed its checks; B's redemption lands first, then A's.
    b.step()
    a.step()
    assert isinstance(a.effect, RevokeGrantOfCode)  # A found it spent: a replay
    a_response = a.finish()
    b_response = b.finish()
    assert a_response.status == 400 and a_response.json()["error"] == "invalid_grant"
    # B got its tokens in one transaction, and A's replay revoked them.
    assert b_response.status == 200
    assert h.store.get_access_token("acme", token_hash(b_response.json()["access_token"])) is None
    assert h.store.get_refresh_token("acme", token_hash(b_response.json()["refresh_token"])) is None


def test_replay_after_issue_revokes_the_issued_tokens():
    h = Harness()
    a, b = _parked_at(h, _code_form(h), GetCode)
    a_response = a.finish()
    assert a_response.status == 200
    assert b.finish().status == 400
    # A's tokens were issued, then revoked by B's replay.
    assert h.store.get_access_token("acme", token_hash(a_response.json()["access_token"])) is None


def test_a_grant_revoked_while_its_code_is_redeemed_gets_no_tokens():
    h = Harness()
    form = _code_form(h)
    a = Stepper(h, handle(_token_request(form), h.ctx())).start().run_until(RedeemCode)
    grant_id = next(iter(h.store._grants))[1]
    h.store.revoke_grant("acme", grant_id)  # the person disconnected the client meanwhile
    response = a.finish()
    assert response.status == 400 and response.json()["error"] == "invalid_grant"
    assert h.store._access == {}
    # The code was spent with it: it cannot be tried again.
    assert h.store.get_code("acme", token_hash(form["code"]), h.now) is None


def test_two_concurrent_refreshes_within_grace_both_succeed_leaving_one_live_refresh_token():
    h = Harness()
    client, first = h.tokens()
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": client["client_id"]}
    a, b = _parked_at(h, form, RotateRefreshToken)
    ra, rb = a.finish(), b.finish()
    assert ra.status == 200 and rb.status == 200
    grants = {v[0].grant_id for v in h.store._grants.values() if not v[0].revoked}
    assert len(grants) == 1
    assert {t.grant_id for t in h.store._refresh.values()} == grants
    # The later answer's refresh token replaced the earlier one's.
    live = [t.token_hash for t in h.store._refresh.values() if t.rotated_at is None]
    assert live == [token_hash(rb.json()["refresh_token"])]


def test_concurrent_refresh_after_grace_is_reuse_and_revokes():
    h = Harness()
    client, first = h.tokens()
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": client["client_id"]}
    a = Stepper(h, handle(_token_request(form), h.ctx())).start().run_until(RotateRefreshToken)
    a_response = a.finish()
    h.now += h.tenant.policy.refresh_grace + 5
    b = Stepper(h, handle(_token_request(form), h.ctx())).start().run_until(RotateRefreshToken)
    assert b.finish().status == 400
    assert h.store.get_access_token("acme", token_hash(a_response.json()["access_token"])) is None
