"""`mcp-oauth-proxy admin | clients | grants | audit`: admin tokens shown
once and kept as hashes, clients and grants listed and revoked, the audit
log, each with the admin API's rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from storage_records import client, grant, with_tokens
from test_directory_cli import CONFIG, make, run

from mcp_oauth_proxy.core.context import token_hash
from mcp_oauth_proxy.storage.keys import load_or_create_keyring
from mcp_oauth_proxy.storage.open import open_store


@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("MCP_OAUTH_PROXY_KEYS", raising=False)
    monkeypatch.setenv("IDP_SECRET", "s3cret")
    path = tmp_path / "proxy.toml"
    path.write_text(CONFIG.format(db=tmp_path / "store.db", keys=tmp_path / "keys"))
    return str(path)


def _store(conf: str) -> object:
    base = Path(conf).parent
    return open_store(f"sqlite:///{base / 'store.db'}", load_or_create_keyring(str(base / "keys"))[0])


def test_an_admin_token_is_printed_once_and_kept_as_its_hash(conf, capsys):
    make(conf, capsys)
    out, _ = run(capsys, "admin", "create-token", "--organization", "acme-corp", "--label", "ops",
                 "--config", conf, "--json")
    made = json.loads(out)
    assert made["token"].startswith("mcp_admin_") and made["organization"] == "acme-corp"
    store = _store(conf)
    (kept,) = store.list_admin_tokens()
    assert kept.token_hash == token_hash(made["token"]) and kept.token_id == made["token_id"]
    out, _ = run(capsys, "admin", "list-tokens", "--config", conf)
    assert made["token_id"] in out and made["token"] not in out
    _, err = run(capsys, "admin", "create-token", "--organization", "nobody", "--config", conf, status=1)
    assert err == "error: no organization 'nobody'\n"
    run(capsys, "admin", "revoke-token", made["token_id"], "--config", conf)
    assert store.list_admin_tokens() == []
    _, err = run(capsys, "admin", "revoke-token", made["token_id"], "--config", conf, status=1)
    assert err == f"error: no admin token {made['token_id']!r}\n"
    # The log tells who made it and who revoked it, never the token.
    out, _ = run(capsys, "audit", "list", "--config", conf, "--json")
    events = json.loads(out)
    assert [e["event"] for e in events[:2]] == ["admin.admin_token_revoked", "admin.admin_token_created"]
    assert made["token"] not in out and all(e["actor"] == "cli" for e in events)


def test_clients_and_grants_listed_and_revoked(conf, capsys):
    make(conf, capsys)
    store = _store(conf)
    store.save_client(client(tenant="filed", client_id="c1"))
    access, _ = with_tokens(store, grant(tenant="filed", grant_id="g1", client_id="c1", user_id="ada"))
    with_tokens(store, grant(tenant="filed", grant_id="g2", client_id="c2", user_id="bob"))
    out, _ = run(capsys, "clients", "list", "filed", "--config", conf)
    assert out.startswith("c1\t")
    out, _ = run(capsys, "grants", "list", "--user", "bob", "--config", conf, "--json")
    assert [g["grant_id"] for g in json.loads(out)] == ["g2"]
    out, _ = run(capsys, "grants", "revoke", "filed", "g2", "--config", conf)
    assert out.startswith("revoked grant g2 of bob to c2")
    _, err = run(capsys, "grants", "revoke", "filed", "g2", "--config", conf, status=1)
    assert err == "error: no live grant 'g2' on server 'filed'\n"
    out, _ = run(capsys, "clients", "delete", "filed", "c1", "--config", conf)
    assert out == "deleted client c1; revoked 1 grant(s)\n"
    assert store.get_access_token("filed", access.token_hash) is None
    out, _ = run(capsys, "grants", "list", "--config", conf)
    assert out == "no grants\n"
    out, _ = run(capsys, "audit", "list", "--server", "filed", "--config", conf, "--json")
    assert [e["event"] for e in json.loads(out)] == ["admin.client_deleted", "admin.grant_revoked"]
    _, err = run(capsys, "clients", "list", "nowhere", "--config", conf, status=1)
    assert err == "error: no server 'nowhere'\n"


def test_a_machine_client_is_made_with_the_cli_its_secret_printed_once(conf, capsys, tmp_path):
    make(conf, capsys)
    run(capsys, "servers", "create", "tools", "--organization", "acme-corp", "--oauth-config", "idp",
        "--issuer", "https://tools.example", "--resource", "https://tools.example/mcp",
        "--id-jag-issuer", "upstream", "--config", conf)
    out, _ = run(capsys, "clients", "create", "tools", "--grant", "client_credentials", "--grant", "jwt-bearer",
                 "--auth-method", "client_secret_post", "--name", "nightly", "--config", conf, "--json")
    made = json.loads(out)
    store = _store(conf)
    kept = store.get_client("tools", made["client_id"])
    assert kept.secret_hash == token_hash(made["client_secret"]) and kept.is_machine
    assert store.get_server("tools").id_jag_issuers == ("upstream",)
    out, _ = run(capsys, "clients", "list", "tools", "--config", conf)
    assert made["client_id"] in out and made["client_secret"] not in out
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519",
                                          "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}))
    out, _ = run(capsys, "clients", "create", "tools", "--auth-method", "private_key_jwt", "--jwks-file", str(keys),
                 "--config", conf)
    assert out.startswith("client_id: mcp_client_") and "client_secret" not in out
    _, err = run(capsys, "clients", "create", "tools", "--auth-method", "private_key_jwt", "--config", conf,
                 status=1)
    assert "jwks" in err
