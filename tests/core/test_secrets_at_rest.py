"""Nothing secret rests in plain text: our tokens, codes and client secrets
as hashes, upstream tokens and our upstream PKCE verifier encrypted
(AES-GCM, with key ids so keys rotate)."""

from __future__ import annotations

import json

import pytest

from support import ISSUER, Harness, params_of, tenant, upstream
from mcp_oauth_proxy.core.errors import DecryptionFailed
from mcp_oauth_proxy.core.models import UpstreamTokens
from mcp_oauth_proxy.storage.crypto import KeyRing, _aad, open_upstream, seal_upstream
from mcp_oauth_proxy.storage.memory import MemoryStore


def test_after_a_full_flow_no_secret_is_in_the_store_in_plain_text():
    h = Harness()
    client, tokens = h.tokens(token_endpoint_auth_method="client_secret_post")
    refreshed = h.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                         "client_id": client["client_id"], "client_secret": client["client_secret"]}).json()
    # The upstream PKCE verifier and state of a login in progress.
    page = h.request("GET", h.authorize_url(client["client_id"]))
    upstream = params_of(page.header("location"))
    verifier_sent = [r for r in h.idp.sent if b"code_verifier=" in r.body][0].body.decode()
    verifier = verifier_sent.split("code_verifier=")[1].split("&")[0]
    dump = h.store.dump()
    secrets = [
        client["client_secret"], tokens["access_token"], tokens["refresh_token"], refreshed["access_token"],
        refreshed["refresh_token"], "upstream-at-1", "upstream-rt-1", upstream["state"], verifier,
        "upstream-secret-value",
    ]
    for secret in secrets:
        assert secret not in dump, secret
    # ...and it is really the memory store's whole content we looked at.
    assert client["client_id"] in dump and "user-42" in dump


def test_ciphertexts_name_their_key_and_old_keys_still_decrypt():
    ring = KeyRing.generate("k1")
    blob = seal_upstream(ring, "acme", "g1", UpstreamTokens("at", "rt", 5))
    assert blob.startswith("v1.k1.")
    rotated = ring.with_new_key("k2")
    assert rotated.active == "k2"
    assert open_upstream(rotated, "acme", "g1", blob).access_token == "at"
    assert seal_upstream(rotated, "acme", "g1", UpstreamTokens("at")).startswith("v1.k2.")


def test_upstream_tokens_sealed_before_their_issue_time_was_kept_still_open():
    ring = KeyRing.generate()
    before = {"access_token": "at", "refresh_token": "rt", "expires_at": 5, "token_type": "Bearer", "scope": None}
    blob = ring.encrypt(json.dumps(before).encode(), _aad("grant", "acme", "g1"))
    assert open_upstream(ring, "acme", "g1", blob) == UpstreamTokens("at", "rt", 5, issued_at=None)
    assert open_upstream(ring, "acme", "g1", seal_upstream(ring, "acme", "g1", UpstreamTokens("at", issued_at=3))) \
        == UpstreamTokens("at", issued_at=3)


def test_upstream_tokens_sealed_by_a_newer_release_still_open_after_a_rollback():
    ring = KeyRing.generate("k1")
    data = json.dumps({"access_token": "at", "refresh_token": None, "expires_at": 5, "token_type": "Bearer",
                       "scope": None, "issued_at": 1, "a_field_of_tomorrow": "x"}).encode()
    blob = ring.encrypt(data, _aad("grant", "acme", "g1"))
    assert open_upstream(ring, "acme", "g1", blob) == UpstreamTokens("at", None, 5, issued_at=1)


def test_a_ciphertext_cannot_be_moved_to_another_record_or_tampered_with():
    ring = KeyRing.generate()
    blob = seal_upstream(ring, "acme", "g1", UpstreamTokens("at"))
    with pytest.raises(DecryptionFailed):
        open_upstream(ring, "acme", "g2", blob)
    with pytest.raises(DecryptionFailed):
        open_upstream(ring, "globex", "g1", blob)
    tampered = blob[:-4] + ("AAAA" if not blob.endswith("AAAA") else "BBBB")
    with pytest.raises(DecryptionFailed):
        open_upstream(ring, "acme", "g1", tampered)
    with pytest.raises(DecryptionFailed):
        open_upstream(ring, "acme", "g1", "garbage")


def test_a_missing_key_fails_that_grant_with_a_clear_error_and_the_person_signs_in_again():
    h = Harness()
    client, tokens = h.tokens()
    h.store.keyring = KeyRing.generate("other")
    with pytest.raises(DecryptionFailed, match="not in the key ring"):
        h.store.get_grant("acme", next(iter(h.store._grants.values()))[0].grant_id)
    # Through userinfo: the grant cannot be used, a 401 tells the client to sign in again.
    h.now += 3600 - 10
    response = h.request("GET", f"{ISSUER}/oauth/userinfo", headers=[("authorization", f"Bearer {tokens['access_token']}")])
    assert response.status == 401 and "sign in again" in response.json()["error_description"]


@pytest.mark.parametrize("kid, key", [("bad id", b"k" * 32), ("k1", b"short")])
def test_key_ring_validates_its_keys(kid, key):
    with pytest.raises(ValueError):
        KeyRing({kid: key}, kid)


def test_memory_store_is_usable_without_a_key_ring_argument():
    assert MemoryStore().keyring.active == "k1"


def test_a_missing_key_is_a_401_at_userinfo_without_an_upstream_userinfo_endpoint():
    # The claims come from the stored grant then: it cannot be opened either.
    h = Harness(tenant=tenant(upstream=upstream(userinfo_endpoint=None)))
    _, tokens = h.tokens()
    h.store.keyring = KeyRing.generate("other")
    response = h.request("GET", f"{ISSUER}/oauth/userinfo", headers=[("authorization", f"Bearer {tokens['access_token']}")])
    assert response.status == 401 and "sign in again" in response.json()["error_description"]
