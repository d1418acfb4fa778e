"""`mcp-oauth-proxy db upgrade | db gc | keys rotate | keys reencrypt`."""

from __future__ import annotations

import pytest
import sqlalchemy

from mcp_oauth_proxy import cli
from mcp_oauth_proxy.cli_storage import main
from mcp_oauth_proxy.storage import migrations
from mcp_oauth_proxy.storage.crypto import KeyRing
from mcp_oauth_proxy.storage.keys import load_keyring, load_or_create_keyring
from mcp_oauth_proxy.storage.migrations import SchemaOutdated
from mcp_oauth_proxy.storage.open import open_store
from mcp_oauth_proxy.storage.schema import grants
from schema_history import add_revision
from storage_records import code, consent, grant


@pytest.fixture
def paths(tmp_path, monkeypatch):
    monkeypatch.delenv("MCP_OAUTH_PROXY_KEYS", raising=False)
    return f"sqlite:///{tmp_path / 'store.db'}", str(tmp_path / "keys.json")


def test_db_upgrade_creates_then_upgrades_only_what_is_missing(paths, capsys, monkeypatch, tmp_path):
    url, _ = paths
    assert cli.main(["db", "upgrade", "--database", url]) == 0  # through the real entry point
    every = [migrations.number(r) for r in migrations.revisions()]
    assert f"applied migrations {every}" in capsys.readouterr().out
    later = add_revision(tmp_path, monkeypatch)  # a revision that changes nothing
    with pytest.raises(SchemaOutdated):
        open_store(url, KeyRing.generate())
    assert main(["db", "upgrade", "--database", url]) == 0
    assert f"applied migrations [{later}]" in capsys.readouterr().out
    assert main(["db", "upgrade", "--database", url]) == 0
    assert "up to date" in capsys.readouterr().out
    open_store(url, KeyRing.generate()).engine.dispose()


def test_db_gc_removes_every_expired_record_in_batches(paths, capsys):
    url, _ = paths
    store = open_store(url, KeyRing.generate())
    for i in range(5):
        store.save_consent_request(consent(id_hash=f"old-{i}", expires_at=1000))
    store.save_consent_request(consent(id_hash="live", expires_at=2**40))
    store.engine.dispose()
    assert main(["db", "gc", "--database", url, "--batch", "2"]) == 0
    assert "removed 5 expired record(s)" in capsys.readouterr().out
    assert open_store(url, KeyRing.generate()).take_consent_request("acme", "live", 0) is not None


def test_keys_rotate_then_reencrypt_moves_every_grant_to_the_new_key(paths, capsys):
    url, key_file = paths
    ring, _ = load_or_create_keyring(key_file, {})
    store = open_store(url, ring)
    for i in range(3):
        store.save_grant_and_code(grant(grant_id=f"g{i}"), code(grant(grant_id=f"g{i}")))
    assert main(["keys", "rotate", "--key-file", key_file]) == 0
    rotated = load_keyring(key_file, {})
    assert f"added key {rotated.active!r}" in capsys.readouterr().out
    assert main(["keys", "reencrypt", "--database", url, "--key-file", key_file, "--batch", "2"]) == 0
    assert f"moved 3 record(s) to key {rotated.active!r}" in capsys.readouterr().out
    with store.engine.connect() as conn:
        assert {KeyRing.key_id_of(b) for b in conn.execute(sqlalchemy.select(grants.c.upstream)).scalars()} == {
            rotated.active}
    store.keyring = rotated
    assert store.get_grant("acme", "g0") == grant(grant_id="g0")
    store.engine.dispose()


def test_reencrypt_reports_a_record_whose_key_is_gone_and_exits_1(paths, capsys):
    url, key_file = paths
    store = open_store(url, KeyRing.generate("gone"))
    store.save_grant_and_code(grant(grant_id="orphan"), code(grant(grant_id="orphan")))
    store.engine.dispose()
    load_or_create_keyring(key_file, {})
    assert main(["keys", "reencrypt", "--database", url, "--key-file", key_file]) == 1
    err = capsys.readouterr().err
    assert "grant acme/orphan: key 'gone' is not in the key ring" in err and "up-at" not in err


def test_settings_come_from_the_config_file(paths, tmp_path, capsys):
    url, key_file = paths
    config = tmp_path / "proxy.toml"
    config.write_text(f"""
[server]
database = "{url}"
key_file = "{key_file}"

[[tenants]]
slug = "acme"
issuer = "https://acme.example.com"
resource = "https://acme.example.com/mcp"

[tenants.upstream]
kind = "github"
client_id = "cid"
client_secret_env = "UNSET_SECRET"
""")
    load_or_create_keyring(key_file, {})
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    assert main(["keys", "rotate", "--config", str(config)]) == 0
    assert main(["keys", "reencrypt", "--config", str(config)]) == 0
    assert "moved 0 record(s) to key 'k2'" in capsys.readouterr().out


def test_mistakes_are_one_line_errors(paths, capsys, monkeypatch, tmp_path):
    url, key_file = paths
    assert main(["db", "gc"]) == 1
    assert "give --database URL" in capsys.readouterr().err
    assert main(["db", "gc", "--database", "memory://"]) == 1
    assert "memory store keeps nothing" in capsys.readouterr().err
    assert main(["keys", "rotate", "--key-file", key_file]) == 1
    assert "cannot read the key file" in capsys.readouterr().err
    assert main(["db", "gc", "--database", "postgresql://postgres@127.0.0.1:1/test"]) == 1
    assert "cannot reach the database" in capsys.readouterr().err
    monkeypatch.setenv("MCP_OAUTH_PROXY_KEYS", "k1:" + "A" * 43)
    assert main(["keys", "rotate", "--key-file", key_file]) == 1
    assert "add the new key there" in capsys.readouterr().err
    (tmp_path / "bad.toml").write_text("[server]\nnope = 1\n")
    assert main(["db", "upgrade", "--config", str(tmp_path / "bad.toml")]) == 1
    assert "bad.toml" in capsys.readouterr().err


def test_keys_reencrypt_moves_oauth_configuration_secrets_too(paths, capsys):
    from mcp_oauth_proxy.core.models import OAuthConfig, Organization
    from mcp_oauth_proxy.storage.schema import oauth_configs

    url, key_file = paths
    ring, _ = load_or_create_keyring(key_file, {})
    store = open_store(url, ring)
    store.create_organization(Organization("org", "Org", 0))
    for name in ("a", "b", "c"):
        store.create_oauth_config(OAuthConfig("org", name, "github", "cid", f"secret-{name}"))
    assert main(["keys", "rotate", "--key-file", key_file]) == 0
    rotated = load_keyring(key_file, {})
    assert main(["keys", "reencrypt", "--database", url, "--key-file", key_file, "--batch", "2"]) == 0
    assert f"moved 3 record(s) to key {rotated.active!r}" in capsys.readouterr().out
    with store.engine.connect() as conn:
        assert {KeyRing.key_id_of(b) for b in conn.execute(sqlalchemy.select(oauth_configs.c.client_secret)).scalars()} == {
            rotated.active}
    store.keyring = rotated
    assert store.get_oauth_config("org", "b").client_secret == "secret-b"
    store.engine.dispose()
