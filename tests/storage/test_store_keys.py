"""The key ring's persistence (environment or key file), rotation, and
re-encryption of stored records to the active key."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest
import sqlalchemy

from mcp_oauth_proxy.core.errors import DecryptionFailed
from mcp_oauth_proxy.storage.crypto import KeyRing
from mcp_oauth_proxy.storage.keys import KeyConfigError, load_keyring, load_or_create_keyring, reencrypt, rotate
from mcp_oauth_proxy.storage.open import open_store
from mcp_oauth_proxy.storage.schema import auth_sessions, grants
from storage_records import T0, code, grant, session

K1, K2 = b"1" * 32, b"2" * 32
B1, B2 = base64.b64encode(K1).decode(), base64.urlsafe_b64encode(K2).decode().rstrip("=")


def test_keys_from_the_environment_the_last_one_active_unless_named():
    ring = load_keyring(None, {"MCP_OAUTH_PROXY_KEYS": f"old:{B1}, new:{B2}"})
    assert ring.active == "new" and ring.raw_keys() == {"old": K1, "new": K2}
    named = load_keyring(None, {"MCP_OAUTH_PROXY_KEYS": f"old:{B1},new:{B2}", "MCP_OAUTH_PROXY_ACTIVE_KEY": "old"})
    assert named.active == "old"


@pytest.mark.parametrize("value, message", [
    ("k1", "KID:BASE64"),
    ("k1:not*base64", "'k1' is not base64"),
    (f"k1:{base64.b64encode(b'short').decode()}", "32 bytes"),
    (",", "holds no key"),
])
def test_bad_keys_in_the_environment_are_named_without_echoing_them(value, message):
    with pytest.raises(KeyConfigError, match=message) as info:
        load_keyring(None, {"MCP_OAUTH_PROXY_KEYS": value})
    assert "c2hvcnQ" not in str(info.value)  # base64 of the short key


def test_the_environment_wins_over_the_key_file(tmp_path):
    path = tmp_path / "keys.json"
    load_or_create_keyring(str(path), {})
    ring, created = load_or_create_keyring(str(path), {"MCP_OAUTH_PROXY_KEYS": f"env:{B1}"})
    assert (ring.active, created) == ("env", False)


def test_no_keys_anywhere_is_a_clear_error(tmp_path):
    with pytest.raises(KeyConfigError, match="MCP_OAUTH_PROXY_KEYS"):
        load_keyring(None, {})
    with pytest.raises(KeyConfigError, match="cannot read"):
        load_keyring(str(tmp_path / "missing.json"), {})
    (tmp_path / "bad.json").write_text('{"keys": []}')
    with pytest.raises(KeyConfigError, match="not a key file"):
        load_keyring(str(tmp_path / "bad.json"), {})


def test_the_key_file_is_created_once_readable_by_its_owner_only(tmp_path):
    path = str(tmp_path / "keys.json")
    ring, created = load_or_create_keyring(path, {})
    assert created and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again, created_again = load_or_create_keyring(path, {})
    assert not created_again and again.raw_keys() == ring.raw_keys() and again.active == ring.active
    assert json.loads(open(path).read())["active"] == ring.active


def test_rotation_adds_an_active_key_and_keeps_the_old_ones(tmp_path):
    path = str(tmp_path / "keys.json")
    ring, _ = load_or_create_keyring(path, {})
    rotated = rotate(path)
    assert rotated.active not in ring.key_ids and set(ring.key_ids) < set(rotated.key_ids)
    loaded = load_keyring(path, {})
    assert loaded.active == rotated.active and loaded.raw_keys() == rotated.raw_keys()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert rotate(path).active not in rotated.key_ids


def _key_ids(store) -> list[str]:
    with store.engine.connect() as conn:
        blobs = [*conn.execute(sqlalchemy.select(grants.c.upstream)).scalars(),
                 *conn.execute(sqlalchemy.select(auth_sessions.c.upstream_code_verifier)).scalars()]
    return sorted(KeyRing.key_id_of(b) for b in blobs)


def test_rotation_and_reencryption_keep_every_grant_usable(sql_url, tmp_path):
    path = str(tmp_path / "keys.json")
    ring, _ = load_or_create_keyring(path, {})
    store = open_store(sql_url, ring)
    saved = [grant(tenant, f"g{i}") for tenant in ("acme", "globex") for i in range(3)]
    for g in saved:
        store.save_grant_and_code(g, code(g))
    store.save_auth_session(session())
    old = ring.active

    store.keyring = rotate(path)  # what a restarted server reads
    assert all(store.get_grant(g.tenant, g.grant_id) == g for g in saved)  # old ciphertexts still open
    store.save_grant_and_code(grant("acme", "new"), code(grant("acme", "new")))
    assert _key_ids(store).count(store.keyring.active) == 1

    result = reencrypt(store, store.keyring, batch=2)  # several batches
    assert (result.moved, result.failed) == (len(saved) + 1, ())
    assert set(_key_ids(store)) == {store.keyring.active}
    # The old key can go now.
    store.keyring = KeyRing({k: v for k, v in store.keyring.raw_keys().items() if k != old}, store.keyring.active)
    assert all(store.get_grant(g.tenant, g.grant_id) == g for g in saved)
    assert store.take_auth_session("acme", "state-1", T0) == session()
    store.engine.dispose()


def test_reencryption_resumes_skipping_records_already_moved(sql_url):
    ring = KeyRing({"k1": K1}, "k1")
    store = open_store(sql_url, ring)
    for i in range(3):
        store.save_grant_and_code(grant(grant_id=f"g{i}"), code(grant(grant_id=f"g{i}")))
    rotated = KeyRing({"k1": K1, "k2": K2}, "k2")
    assert reencrypt(store, rotated).moved == 3
    # A replica still on k1 wrote one more; the next run moves just that one.
    store.save_grant_and_code(grant(grant_id="late"), code(grant(grant_id="late")))
    assert reencrypt(store, rotated).moved == 1
    assert reencrypt(store, rotated).moved == 0
    store.engine.dispose()


def test_a_record_whose_key_is_gone_is_reported_and_the_rest_move(sql_url):
    store = open_store(sql_url, KeyRing({"lost": K1}, "lost"))
    store.save_grant_and_code(grant(grant_id="orphan"), code(grant(grant_id="orphan")))
    store.keyring = KeyRing({"k1": K2}, "k1")
    store.save_grant_and_code(grant(grant_id="kept"), code(grant(grant_id="kept")))
    ring = KeyRing({"k1": K2, "k2": b"3" * 32}, "k2")
    store.keyring = ring
    result = reencrypt(store, ring)
    assert result.moved == 1
    assert result.failed == ("grant acme/orphan: key 'lost' is not in the key ring",)
    assert store.get_grant("acme", "kept") == grant(grant_id="kept")
    with pytest.raises(DecryptionFailed):
        store.get_grant("acme", "orphan")
    store.engine.dispose()
