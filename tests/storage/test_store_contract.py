"""The Store contract (the store operations of core/effects.py), run against every backend: memory,
SQLite, PostgreSQL, MariaDB. The memory store is the reference."""

from __future__ import annotations

import time
from typing import Any

import attrs
import pytest

from mcp_oauth_proxy.core.errors import DecryptionFailed
from mcp_oauth_proxy.core.models import AuditEvent, ConnectionsSignIn, Redemption, Revocation, Rotation, UpstreamTokens
from mcp_oauth_proxy.core.store import REPLACED, REVOCATION_RECORD, Store
from mcp_oauth_proxy.storage.crypto import KeyRing
from storage_records import T0, access, client, code, consent, grant, issue, refresh, session, with_tokens


def rotate(store: Any, rt: Any, now: int, grace: int = 30, n: str = "next") -> Rotation:
    g = grant(rt.tenant, rt.grant_id)
    return store.rotate_refresh_token(rt.tenant, rt.token_hash, now, grace, access(g, f"at-{n}"), refresh(g, f"rt-{n}"))


def test_every_store_operation_is_implemented(store):
    wanted = {name for name in vars(Store) if not name.startswith("_")}
    assert wanted and {name for name in wanted if not callable(getattr(store, name, None))} == set()


# -- clients -------------------------------------------------------------------
def test_a_client_round_trips_and_is_replaced_by_a_save_with_its_id(store):
    store.save_client(client())
    assert store.get_client("acme", "client-1") == client()
    store.save_client(client(client_name=None, secret_hash=None, redirect_uris=("https://x.example/cb",)))
    assert store.get_client("acme", "client-1") == client(client_name=None, secret_hash=None,
                                                          redirect_uris=("https://x.example/cb",))


def test_a_client_is_found_only_in_its_tenant_and_by_its_exact_id(store):
    store.save_client(client())
    assert store.get_client("globex", "client-1") is None
    assert store.get_client("acme", "CLIENT-1") is None
    assert store.get_client("acme", "client-2") is None


def test_a_client_that_redeemed_a_code_no_longer_lapses(store):
    store.save_client(client(client_id="used", expires_at=T0 + 10))
    store.save_client(client(client_id="unused", expires_at=T0 + 10))
    store.save_client(client("globex", "used", expires_at=T0 + 10))
    g = grant(client_id="used")
    store.save_grant_and_code(g, code(g))
    assert store.redeem_code("acme", g.code_hash, T0, access(g, "at-1"), None, True) is Redemption.ISSUED
    assert store.get_client("acme", "used").expires_at is None
    assert store.delete_expired(T0 + 9) == 0
    assert store.delete_expired(T0 + 10) == 2
    assert store.get_client("acme", "used") == client(client_id="used")
    assert store.get_client("acme", "unused") is None
    assert store.get_client("globex", "used") is None


# -- rate-limit counters -------------------------------------------------------------
def test_a_counter_counts_hits_per_key_and_window(store):
    key = "acme|token|client|https://app.example/" + "x" * 500  # long keys too
    assert [store.hit_counter(key, T0, T0 + 60) for _ in range(3)] == [1, 2, 3]
    assert store.hit_counter(key, T0 + 60, T0 + 120) == 1
    assert store.hit_counter("acme|token|address|10.0.0.1", T0, T0 + 60) == 1
    assert store.delete_expired(T0 + 60) == 2
    assert store.hit_counter(key, T0, T0 + 60) == 1  # the expired window was removed
    assert store.hit_counter(key, T0 + 60, T0 + 120) == 2


def test_a_signed_out_session_is_remembered_until_it_expires(store):
    assert store.session_ended("s1", T0) is False
    store.end_session("s1", T0 + 60)
    store.end_session("s1", T0 + 60)  # twice: the same
    assert store.session_ended("s1", T0) is True and store.session_ended("s1", T0 + 59) is True
    assert store.session_ended("s1", T0 + 60) is False  # its cookie has expired: nothing to refuse
    assert store.session_ended("s2", T0) is False
    # Not a rate-limit counter of the same name, nor one of them.
    assert store.hit_counter("s1", 0, T0 + 60) == 1
    assert store.session_ended("session-ended:s1", T0) is False
    assert store.delete_expired(T0 + 60) == 2
    assert store.session_ended("s1", T0) is False


def test_withdrawn_approvals_are_remembered_by_client_until_they_expire(store):
    assert store.approvals_withdrawn("acme", "c1", T0) is None
    store.withdraw_approvals("acme", "c1", T0, T0 + 60)
    assert store.approvals_withdrawn("acme", "c1", T0 + 59) == T0
    store.withdraw_approvals("acme", "c1", T0 + 5, T0 + 65)  # again: the later one
    assert store.approvals_withdrawn("acme", "c1", T0 + 64) == T0 + 5
    assert store.approvals_withdrawn("acme", "c1", T0 + 65) is None  # every cookie from before has expired
    # Another client's, another tenant's, a session's and a counter of the same names are other things.
    assert store.approvals_withdrawn("acme", "c2", T0) is None
    assert store.approvals_withdrawn("globex", "c1", T0) is None
    store.end_session("c1", T0 + 60)
    assert store.hit_counter("c1", 0, T0 + 60) == 1
    assert store.approvals_withdrawn("acme", "c1", T0 + 64) == T0 + 5
    assert store.session_ended("c1", T0) is True
    assert store.delete_expired(T0 + 65) == 3
    assert store.approvals_withdrawn("acme", "c1", T0) is None


# -- consent requests and auth sessions ---------------------------------------------
def test_a_consent_request_is_taken_once(store):
    store.save_consent_request(consent())
    assert store.take_consent_request("acme", "consent-1", T0) == consent()
    assert store.take_consent_request("acme", "consent-1", T0) is None


def test_an_expired_consent_request_is_not_returned_and_is_gone(store):
    store.save_consent_request(consent(expires_at=T0 + 10))
    assert store.take_consent_request("acme", "consent-1", T0 + 10) is None
    assert store.take_consent_request("acme", "consent-1", T0) is None


def test_a_consent_request_of_another_tenant_is_not_taken(store):
    store.save_consent_request(consent())
    assert store.take_consent_request("globex", "consent-1", T0) is None
    assert store.take_consent_request("acme", "consent-1", T0) == consent()


def test_an_auth_session_is_taken_once_with_its_verifier_decrypted(store):
    store.save_auth_session(session())
    assert store.take_auth_session("acme", "state-1", T0) == session()
    assert store.take_auth_session("acme", "state-1", T0) is None


def test_a_sign_in_to_the_connections_page_is_kept_apart_from_a_clients_authorization(store):
    store.save_auth_session(session(state_hash="state-c", request=ConnectionsSignIn()))
    store.save_auth_session(session())
    assert store.take_auth_session("acme", "state-c", T0) == session(state_hash="state-c", request=ConnectionsSignIn())
    assert store.take_auth_session("acme", "state-1", T0) == session()


def test_an_expired_or_foreign_auth_session_is_not_returned(store):
    store.save_auth_session(session(expires_at=T0 + 5))
    store.save_auth_session(session("globex", "state-2"))
    assert store.take_auth_session("acme", "state-2", T0) is None
    assert store.take_auth_session("acme", "state-1", T0 + 5) is None
    assert store.take_auth_session("acme", "state-1", T0) is None  # deleted by the expired take
    assert store.take_auth_session("globex", "state-2", T0) == session("globex", "state-2")


# -- grants and codes -----------------------------------------------------------------
def test_a_code_is_taken_once(store):
    g = grant()
    store.save_grant_and_code(g, code(g))
    assert store.take_code("acme", g.code_hash, T0) == code(g)
    assert store.take_code("acme", g.code_hash, T0) is None


def test_an_expired_or_foreign_code_is_not_returned(store):
    g, h = grant(), grant("globex", "grant-2")
    store.save_grant_and_code(g, code(g, expires_at=T0 + 60))
    store.save_grant_and_code(h, code(h))
    assert store.take_code("acme", h.code_hash, T0) is None
    assert store.take_code("acme", g.code_hash, T0 + 60) is None
    assert store.take_code("acme", g.code_hash, T0) is None
    assert store.take_code("globex", h.code_hash, T0) == code(h)


def test_a_grant_round_trips_with_its_upstream_tokens_decrypted(store):
    g = grant()
    store.save_grant_and_code(g, code(g))
    got = store.get_grant("acme", "grant-1")
    assert got == g and got.claims == g.claims and got.upstream == g.upstream
    assert store.get_grant("globex", "grant-1") is None
    assert store.get_grant("acme", "grant-x") is None


def test_a_replayed_code_revokes_its_grant_once_and_only_in_its_tenant(store):
    g = grant()
    at, rt = with_tokens(store, g)
    assert store.take_code("acme", g.code_hash, T0) is not None
    assert store.revoke_grant_of_code("globex", g.code_hash) is False
    assert store.get_access_token("acme", at.token_hash) == at
    assert store.revoke_grant_of_code("acme", g.code_hash) is True
    assert store.revoke_grant_of_code("acme", g.code_hash) is False
    assert store.revoke_grant_of_code("acme", "unknown") is False
    assert store.get_grant("acme", g.grant_id) is None
    assert store.get_access_token("acme", at.token_hash) is None
    assert store.get_refresh_token("acme", rt.token_hash) is None


def test_a_grant_without_a_browser_is_saved_with_its_token_and_has_no_upstream_tokens(store):
    # No code, no upstream tokens.
    g = attrs.evolve(grant(grant_id="grant-m", user_id="client:client-1", claims={}, upstream=None), code_hash=None)
    at = attrs.evolve(access(g, "at-m"), grant_type="client_credentials")
    store.save_grant_and_token(g, at)
    assert store.get_grant("acme", g.grant_id) == g and store.get_grant("acme", g.grant_id).upstream is None
    assert store.get_access_token("acme", "at-m") == at
    assert store.get_access_token("acme", "at-m").principal.principal_type == "client"
    # Two of them: no code of theirs stands in another's way.
    h = attrs.evolve(g, grant_id="grant-n")
    store.save_grant_and_token(h, attrs.evolve(at, token_hash="at-n", grant_id="grant-n"))
    assert store.get_access_token("acme", "at-n") is not None
    assert store.revoke_grant_of_code("acme", "code-of-grant-m") is False
    store.revoke_grant("acme", g.grant_id)
    assert store.get_access_token("acme", "at-m") is None and store.get_grant("acme", g.grant_id) is None
    assert store.get_access_token("acme", "at-n") is not None
    assert store.delete_expired(g.expires_at) >= 2
    assert store.get_access_token("acme", "at-n") is None


def test_a_machine_client_keeps_its_public_keys(store):
    keys = '{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}'
    c = client(client_id="machine", redirect_uris=(), grant_types=("client_credentials",), response_types=(),
               token_endpoint_auth_method="private_key_jwt", secret_hash=None, jwks=keys)
    store.save_client(c)
    assert store.get_client("acme", "machine") == c
    d = attrs.evolve(c, client_id="fetched", jwks=None, jwks_uri="https://keys.example/jwks.json")
    store.save_client(d)
    assert store.get_client("acme", "fetched") == d


# -- our tokens --------------------------------------------------------------------------
def test_a_code_is_redeemed_once_for_its_grants_tokens_and_its_event(store):
    g = grant()
    store.save_client(client(expires_at=T0 + 10))
    store.save_grant_and_code(g, code(g))
    assert store.get_code("acme", g.code_hash, T0) == code(g)
    at, rt = access(g, "at-1"), refresh(g, "rt-1")
    event = AuditEvent(at=T0, event="tokens_issued", tenant="acme", client_id=g.client_id, user_id=g.user_id)
    assert store.redeem_code("acme", g.code_hash, T0, at, rt, True, event, T0 + 60) is Redemption.ISSUED
    assert (store.get_access_token("acme", "at-1"), store.get_refresh_token("acme", "rt-1")) == (at, rt)
    assert store.get_client("acme", "client-1").expires_at is None  # kept for good
    assert [e.event for e in store.list_audit_events(10)] == ["tokens_issued"]
    assert store.get_code("acme", g.code_hash, T0) is None
    # Spent: a second redemption stores nothing, and neither does its event.
    again = store.redeem_code("acme", g.code_hash, T0, access(g, "at-2"), refresh(g, "rt-2"), False, event, T0 + 60)
    assert again is Redemption.SPENT
    assert store.get_access_token("acme", "at-2") is None and len(store.list_audit_events(10)) == 1


def test_a_code_is_not_redeemed_expired_elsewhere_or_for_another_grant(store):
    g, other = grant(), grant(grant_id="grant-2", code_hash="code-2")
    store.save_grant_and_code(g, code(g, expires_at=T0 + 60))
    store.save_grant_and_code(other, code(other))
    assert store.get_code("acme", g.code_hash, T0 + 60) is None
    assert store.get_code("globex", g.code_hash, T0) is None
    tries = [("acme", g.code_hash, T0 + 60, access(g, "at-late")),  # expired
             ("globex", g.code_hash, T0, attrs.evolve(access(g, "at-there"), tenant="globex")),
             ("acme", g.code_hash, T0, access(other, "at-other"))]  # another grant's tokens
    for tenant, code_hash, now, at in tries:
        assert store.redeem_code(tenant, code_hash, now, at, None, False) is Redemption.SPENT
        assert store.get_access_token(tenant, at.token_hash) is None
    assert store.get_code("acme", g.code_hash, T0) == code(g)  # none of them spent it


def test_a_code_of_a_revoked_grant_is_spent_and_issues_nothing(store):
    g = grant()
    store.save_grant_and_code(g, code(g))
    store.revoke_grant("acme", g.grant_id)
    assert store.redeem_code("acme", g.code_hash, T0, access(g, "at-1"), refresh(g, "rt-1"), False) \
        is Redemption.REVOKED
    assert store.get_access_token("acme", "at-1") is None and store.get_refresh_token("acme", "rt-1") is None
    assert store.get_code("acme", g.code_hash, T0) is None


def test_tokens_are_found_only_in_their_tenant(store):
    at, rt = with_tokens(store, grant())
    assert store.get_access_token("globex", at.token_hash) is None
    assert store.get_refresh_token("globex", rt.token_hash) is None
    assert store.get_access_token("acme", rt.token_hash) is None  # kinds do not mix
    assert store.get_refresh_token("acme", rt.token_hash) == rt


def test_the_same_ids_in_two_tenants_are_two_records(store):
    a, b = grant("acme"), grant("globex", claims={"sub": "other"})
    with_tokens(store, a)
    with_tokens(store, b)
    store.revoke_grant("acme", "grant-1")
    assert store.get_grant("acme", "grant-1") is None
    assert store.get_grant("globex", "grant-1").claims == {"sub": "other"}
    assert store.get_access_token("globex", "at-grant-1-1") is not None


def test_expiry_of_a_token_is_the_callers_to_check(store):
    at, _ = with_tokens(store, grant())
    assert store.get_access_token("acme", at.token_hash).expires_at == at.expires_at


def test_revoking_an_access_token_removes_only_that_token(store):
    g = grant()
    at, rt = with_tokens(store, g)
    assert issue(store, g, access(g, "at-other"))
    store.revoke_access_token("globex", at.token_hash)
    assert store.get_access_token("acme", at.token_hash) == at
    store.revoke_access_token("acme", at.token_hash)
    assert store.get_access_token("acme", at.token_hash) is None
    assert store.get_access_token("acme", "at-other") is not None
    assert store.get_refresh_token("acme", rt.token_hash) == rt


def test_revoking_a_grant_hides_every_token_and_stops_upstream_updates(store):
    g = grant()
    at, rt = with_tokens(store, g)
    store.revoke_grant("globex", g.grant_id)
    assert store.get_access_token("acme", at.token_hash) == at
    store.revoke_grant("acme", g.grant_id)
    store.revoke_grant("acme", g.grant_id)  # idempotent
    assert store.get_access_token("acme", at.token_hash) is None
    assert store.get_refresh_token("acme", rt.token_hash) is None
    assert store.get_grant("acme", g.grant_id) is None
    assert store.claim_upstream_refresh("acme", g.grant_id, 0, T0, T0 + 30) is False
    assert store.update_upstream_tokens("acme", g.grant_id, 0, UpstreamTokens("new")) is False
    assert rotate(store, rt, T0) is Rotation.GONE


# -- revocations, for other processes to follow ---------------------------------------------
def _revoked(store: Any, since: int) -> set[tuple[str, str, str]]:
    return {(r.tenant, r.kind, r.revoked) for r in store.revocations_since(since)}


def test_every_revocation_is_recorded_for_other_processes(store):
    since = int(time.time())
    assert store.revocations_since(since) == []
    g, g2, g3 = grant(), grant(grant_id="grant-2"), grant(grant_id="grant-3")
    at, _ = with_tokens(store, g)
    _, rt2 = with_tokens(store, g2)
    with_tokens(store, g3)
    store.revoke_access_token("acme", at.token_hash)
    assert _revoked(store, since) == {("acme", Revocation.TOKEN, at.token_hash)}
    store.revoke_grant("acme", g.grant_id)
    assert store.revoke_grant_of_code("acme", g3.code_hash) is True
    # A replay revokes the family: recorded like any revocation.
    assert rotate(store, rt2, T0 + 100, n="a") is Rotation.ROTATED
    assert rotate(store, rt2, T0 + 200, n="b") is Rotation.REUSED
    assert _revoked(store, since) == {("acme", Revocation.TOKEN, at.token_hash),
                                      ("acme", Revocation.GRANT, g.grant_id),
                                      ("acme", Revocation.GRANT, g2.grant_id),
                                      ("acme", Revocation.GRANT, g3.grant_id)}
    assert all(since <= r.revoked_at <= time.time() + 1 for r in store.revocations_since(since))
    assert store.revocations_since(int(time.time()) + 2) == []


def test_revocation_records_lapse_after_an_hour(store):
    g = grant()
    with_tokens(store, g)
    store.revoke_grant("acme", g.grant_id)
    now = int(time.time())
    store.delete_expired(now + 60)
    assert _revoked(store, now - 5) == {("acme", Revocation.GRANT, g.grant_id)}
    store.delete_expired(now + REVOCATION_RECORD + 5)
    assert store.revocations_since(0) == []


# -- refresh token rotation (RFC 9700 §4.14.2) ------------------------------------------------
def test_rotation_marks_the_token_and_stores_both_successors(store):
    g = grant()
    _, rt = with_tokens(store, g)
    assert rotate(store, rt, T0 + 100) is Rotation.ROTATED
    assert store.get_refresh_token("acme", rt.token_hash) == attrs.evolve(rt, rotated_at=T0 + 100,
                                                                           successor_hash="rt-next")
    assert store.get_refresh_token("acme", "rt-next") == refresh(g, "rt-next")
    assert store.get_access_token("acme", "at-next") == access(g, "at-next")


@pytest.mark.parametrize("late, outcome", [(0, Rotation.ROTATED), (30, Rotation.ROTATED), (31, Rotation.REUSED)])
def test_a_rotated_token_presented_again_rotates_only_within_the_grace_window(store, late, outcome):
    _, rt = with_tokens(store, grant())
    assert rotate(store, rt, T0 + 100, n="a") is Rotation.ROTATED
    assert rotate(store, rt, T0 + 100 + late, grace=30, n="b") is outcome
    if outcome is Rotation.ROTATED:
        # The grace window counts from the first rotation, not the last.
        assert store.get_refresh_token("acme", rt.token_hash).rotated_at == T0 + 100
        assert store.get_access_token("acme", "at-b") is not None
        # The retry's successor replaced the first one: one live refresh token.
        assert store.get_refresh_token("acme", "rt-a").rotated_at == REPLACED
        assert store.get_refresh_token("acme", "rt-b") == refresh(grant(), "rt-b")
        assert store.get_refresh_token("acme", rt.token_hash).successor_hash == "rt-b"
    else:
        assert store.get_grant("acme", rt.grant_id) is None
        for token_hash in ("at-a", "at-b"):
            assert store.get_access_token("acme", token_hash) is None
        assert store.get_refresh_token("acme", "rt-a") is None
        assert rotate(store, rt, T0 + 200, n="c") is Rotation.GONE


def test_retries_within_grace_leave_one_live_refresh_token_in_the_family(store):
    _, rt = with_tokens(store, grant())
    for n in "abcd":
        assert rotate(store, rt, T0 + 100, n=n) is Rotation.ROTATED
    assert [n for n in "abcd" if store.get_refresh_token("acme", f"rt-{n}").rotated_at is None] == ["d"]
    assert rotate(store, attrs.evolve(rt, token_hash="rt-d"), T0 + 101, n="e") is Rotation.ROTATED


def test_a_replaced_successor_presented_later_is_reuse_and_revokes_the_family(store):
    _, rt = with_tokens(store, grant())
    assert rotate(store, rt, T0 + 100, n="a") is Rotation.ROTATED
    assert rotate(store, rt, T0 + 101, n="b") is Rotation.ROTATED  # rt-a replaced by rt-b
    # Whoever holds rt-a now (the client whose answer was lost, or a thief
    # beaten to the retry) replays a token of the family: it is over.
    assert rotate(store, attrs.evolve(rt, token_hash="rt-a"), T0 + 102, n="c") is Rotation.REUSED
    assert store.get_grant("acme", rt.grant_id) is None and store.get_refresh_token("acme", "rt-b") is None


def test_a_retry_after_its_successor_was_used_is_reuse_and_revokes_the_family(store):
    _, rt = with_tokens(store, grant())
    assert rotate(store, rt, T0 + 100, n="a") is Rotation.ROTATED
    assert rotate(store, attrs.evolve(rt, token_hash="rt-a"), T0 + 101, n="b") is Rotation.ROTATED
    # Within the first token's grace window, but the family has moved on.
    assert rotate(store, rt, T0 + 102, n="c") is Rotation.REUSED
    assert store.get_grant("acme", rt.grant_id) is None
    assert store.get_refresh_token("acme", "rt-b") is None and store.get_access_token("acme", "at-c") is None


def test_rotation_of_an_unknown_expired_or_foreign_token_is_gone_and_stores_nothing(store):
    g = grant()
    rt = refresh(g, "rt-short", expires_at=T0 + 50)
    assert issue(store, g, access(g, "at-1"), rt)
    assert rotate(store, rt, T0 + 50, n="x") is Rotation.GONE
    assert rotate(store, attrs.evolve(rt, tenant="globex"), T0, n="y") is Rotation.GONE
    assert rotate(store, attrs.evolve(rt, token_hash="unknown"), T0, n="z") is Rotation.GONE
    for n in "xyz":
        assert store.get_access_token("acme", f"at-{n}") is None
    assert store.get_grant("acme", g.grant_id) is not None  # GONE revokes nothing


# -- upstream tokens: lease and compare-and-swap -----------------------------------------------
def test_the_upstream_refresh_lease_is_held_by_one_until_it_expires(store):
    g = grant()
    store.save_grant_and_code(g, code(g))
    assert store.claim_upstream_refresh("acme", g.grant_id, 0, T0, T0 + 30) is True
    assert store.get_grant("acme", g.grant_id).refresh_lease_until == T0 + 30
    assert store.claim_upstream_refresh("acme", g.grant_id, 0, T0 + 29, T0 + 60) is False
    assert store.claim_upstream_refresh("acme", g.grant_id, 0, T0 + 30, T0 + 60) is True
    assert store.claim_upstream_refresh("acme", g.grant_id, 1, T0 + 90, T0 + 120) is False  # wrong version
    assert store.claim_upstream_refresh("globex", g.grant_id, 0, T0 + 90, T0 + 120) is False


def test_release_frees_the_lease_only_at_its_version(store):
    g = grant()
    store.save_grant_and_code(g, code(g))
    assert store.claim_upstream_refresh("acme", g.grant_id, 0, T0, T0 + 30)
    store.release_upstream_refresh("acme", g.grant_id, 1)
    assert store.get_grant("acme", g.grant_id).refresh_lease_until == T0 + 30
    store.release_upstream_refresh("acme", g.grant_id, 0)
    assert store.get_grant("acme", g.grant_id).refresh_lease_until is None
    assert store.claim_upstream_refresh("acme", g.grant_id, 0, T0 + 1, T0 + 30) is True


def test_upstream_tokens_are_replaced_only_at_their_version(store):
    g = grant()
    store.save_grant_and_code(g, code(g))
    assert store.claim_upstream_refresh("acme", g.grant_id, 0, T0, T0 + 30)
    new = UpstreamTokens("up-at-2", None, None, "Bearer", None)
    assert store.update_upstream_tokens("acme", g.grant_id, 0, new) is True
    got = store.get_grant("acme", g.grant_id)
    assert (got.upstream, got.upstream_version, got.refresh_lease_until) == (new, 1, None)
    assert store.update_upstream_tokens("acme", g.grant_id, 0, UpstreamTokens("stale")) is False
    assert store.update_upstream_tokens("globex", g.grant_id, 1, UpstreamTokens("foreign")) is False
    assert store.get_grant("acme", g.grant_id).upstream == new


# -- housekeeping --------------------------------------------------------------------------------
def test_delete_expired_removes_only_expired_records_in_batches(store):
    old, live = grant(grant_id="old", expires_at=T0 + 10), grant(grant_id="live")
    store.save_grant_and_code(old, code(old, expires_at=T0 + 10))
    store.save_grant_and_code(live, code(live, expires_at=T0 + 60))
    for i in range(3):
        assert issue(store, live, access(live, f"at-{i}", T0 + 10), refresh(live, f"rt-{i}", T0 + 10))
    assert issue(store, live, access(live, "at-live"), refresh(live, "rt-live"))
    store.save_consent_request(consent(expires_at=T0 + 10))
    store.save_auth_session(session(expires_at=T0 + 10))
    store.save_auth_session(session(state_hash="state-live"))
    assert store.delete_expired(T0 + 9) == 0
    # limit 2 of each kind: 2 access, 2 refresh, 1 code, 1 grant, 1 consent, 1 session.
    assert store.delete_expired(T0 + 10, limit=2) == 8
    assert store.delete_expired(T0 + 10, limit=2) == 2
    assert store.delete_expired(T0 + 10, limit=2) == 0
    assert store.get_grant("acme", "old") is None
    assert store.revoke_grant_of_code("acme", old.code_hash) is False
    assert store.get_access_token("acme", "at-live") is not None
    assert store.get_refresh_token("acme", "rt-0") is None
    assert store.take_auth_session("acme", "state-live", T0) is not None
    assert store.take_code("acme", live.code_hash, T0) is not None


def test_a_grant_whose_key_is_gone_fails_alone(store):
    a, b = grant(grant_id="a"), grant(grant_id="b")
    store.save_grant_and_code(a, code(a))
    store.keyring = store.keyring.with_new_key("k2")
    store.save_grant_and_code(b, code(b))
    store.keyring = KeyRing({"k2": store.keyring.raw_keys()["k2"]}, "k2")
    with pytest.raises(DecryptionFailed, match="not in the key ring"):
        store.get_grant("acme", "a")
    assert store.get_grant("acme", "b").upstream == b.upstream
