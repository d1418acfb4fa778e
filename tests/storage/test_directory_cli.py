"""`mcp-oauth-proxy organizations | oauth-configs | servers` on the database
a config file names: text and --json, secrets never taken on argv nor
printed, one-line errors with status 1, the file's tenants read-only."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from mcp_oauth_proxy import cli
from mcp_oauth_proxy.storage.keys import load_or_create_keyring
from mcp_oauth_proxy.storage.open import open_store
from storage_records import grant, with_tokens

SECRET = "upstream-client-secret-0123456789"

CONFIG = """\
[server]
database = "sqlite:///{db}"
key_file = "{keys}"

[[tenants]]
slug = "filed"
issuer = "https://filed.example"
resource = "https://filed.example/mcp"

[tenants.upstream]
kind = "github"
client_id = "cid"
client_secret = "file-secret"
"""


@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("MCP_OAUTH_PROXY_KEYS", raising=False)
    monkeypatch.setenv("IDP_SECRET", SECRET)
    path = tmp_path / "proxy.toml"
    path.write_text(CONFIG.format(db=tmp_path / "store.db", keys=tmp_path / "keys"))
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str, status: int = 0) -> tuple[str, str]:
    assert cli.main(list(argv)) == status
    out, err = capsys.readouterr()
    return out, err


def make(conf: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "organizations", "create", "acme-corp", "--display-name", "Acme Corp", "--config", conf)
    run(capsys, "oauth-configs", "create", "idp", "--organization", "acme-corp", "--kind", "oidc",
        "--issuer", "https://idp.example", "--client-id", "cid", "--client-secret-env", "IDP_SECRET",
        "--scope", "openid", "--scope", "email", "--config", conf)


def test_the_whole_directory_through_the_cli(conf, capsys, monkeypatch):
    make(conf, capsys)
    out, _ = run(capsys, "organizations", "list", "--config", conf, "--json")
    assert [o["name"] for o in json.loads(out)] == ["acme-corp"]
    monkeypatch.setattr("sys.stdin", io.StringIO("second-secret\n"))
    run(capsys, "oauth-configs", "create", "gh", "--organization", "acme-corp", "--kind", "github",
        "--client-id", "gh-id", "--client-secret-stdin", "--config", conf)
    out, _ = run(capsys, "oauth-configs", "list", "--config", conf)
    assert out.splitlines() == ["acme-corp/gh\tgithub\t", "acme-corp/idp\toidc\thttps://idp.example"]

    out, _ = run(capsys, "servers", "create", "beta", "--organization", "acme-corp", "--oauth-config", "idp",
                 "--issuer", "https://beta.example", "--resource", "https://beta.example/mcp",
                 "--policy", "access_token_ttl=600", "--config", conf, "--json")
    assert json.loads(out)["policy"] == {"access_token_ttl": 600}
    out, _ = run(capsys, "servers", "list", "--config", conf, "--json")
    listed = json.loads(out)
    assert [(s["slug"], s["managed"]) for s in listed] == [("beta", "database"), ("filed", "file")]  # by slug
    out, _ = run(capsys, "servers", "show", "filed", "--config", conf)
    assert "managed: file" in out and "read_only: True" in out

    # Grants of beta, then another configuration: they are revoked, and counted.
    store = open_store(f"sqlite:///{Path(conf).parent / 'store.db'}",
                       load_or_create_keyring(str(Path(conf).parent / "keys"))[0])
    at, _ = with_tokens(store, grant("beta", "g1"))
    with_tokens(store, grant("beta", "g2"))
    out, _ = run(capsys, "oauth-configs", "update", "idp", "--organization", "acme-corp",
                 "--client-secret-env", "IDP_SECRET", "--config", conf)
    assert "grants made through it are kept" in out
    assert store.get_access_token("beta", at.token_hash) is not None
    out, _ = run(capsys, "servers", "update", "beta", "--oauth-config", "gh", "--config", conf)
    assert out.strip() == ("updated server beta; it signs in with acme-corp/gh now: revoked 2 grant(s) "
                           "made through acme-corp/idp")
    assert store.get_access_token("beta", at.token_hash) is None
    out, _ = run(capsys, "servers", "update", "beta", "--resource-name", "Beta", "--config", conf, "--json")
    assert json.loads(out)["revoked_grants"] == 0 and json.loads(out)["resource_name"] == "Beta"
    store.engine.dispose()

    _, err = run(capsys, "oauth-configs", "delete", "gh", "--organization", "acme-corp", "--config", conf, status=1)
    assert err == "error: OAuth configuration acme-corp/gh is used by server(s) beta\n"
    out, _ = run(capsys, "servers", "delete", "beta", "--config", conf)
    assert out.strip() == "deleted server beta; revoked 0 grant(s)"
    run(capsys, "oauth-configs", "delete", "gh", "--organization", "acme-corp", "--config", conf)
    out, _ = run(capsys, "servers", "list", "--config", conf)
    assert out.splitlines() == ["filed\tfile\thttps://filed.example\thttps://filed.example/mcp"]


def test_an_organization_is_shown_renamed_for_display_and_deleted_only_when_it_owns_nothing(conf, capsys):
    make(conf, capsys)
    out, _ = run(capsys, "organizations", "show", "acme-corp", "--config", conf, "--json")
    assert json.loads(out)["name"] == "acme-corp"
    out, _ = run(capsys, "organizations", "update", "acme-corp", "--display-name", "Acme, Inc.", "--config", conf)
    assert out.strip() == "updated organization acme-corp"
    out, _ = run(capsys, "organizations", "show", "acme-corp", "--config", conf)
    assert "display_name: Acme, Inc." in out
    # It owns an OAuth configuration: not deleted, and nothing is lost.
    _, err = run(capsys, "organizations", "delete", "acme-corp", "--config", conf, status=1)
    assert err.startswith("error: ") and err.count("\n") == 1 and "idp" in err
    run(capsys, "oauth-configs", "delete", "idp", "--organization", "acme-corp", "--config", conf)
    out, _ = run(capsys, "organizations", "delete", "acme-corp", "--config", conf)
    assert out.strip() == "deleted organization acme-corp"
    out, _ = run(capsys, "organizations", "list", "--config", conf)
    assert out.strip() == "no organizations"


def test_a_client_secret_is_never_printed_and_show_says_set(conf, capsys):
    make(conf, capsys)
    everything = ""
    for argv in (["oauth-configs", "show", "idp", "--organization", "acme-corp"],
                 ["oauth-configs", "list"], ["oauth-configs", "list", "--organization", "acme-corp"]):
        for extra in ([], ["--json"]):
            out, err = run(capsys, *argv, "--config", conf, *extra)
            everything += out + err
    assert SECRET not in everything
    out, _ = run(capsys, "oauth-configs", "show", "idp", "--organization", "acme-corp", "--config", conf)
    assert "client_secret: set" in out.splitlines()
    out, _ = run(capsys, "oauth-configs", "show", "idp", "--organization", "acme-corp", "--config", conf, "--json")
    assert json.loads(out)["client_secret"] == "set" and json.loads(out)["scopes"] == ["openid", "email"]
    assert SECRET not in Path(conf).parent.joinpath("store.db").read_bytes().decode("latin-1")


def test_a_secret_is_not_taken_on_the_command_line(conf, capsys):
    run(capsys, "organizations", "create", "acme-corp", "--config", conf)
    with pytest.raises(SystemExit):
        cli.main(["oauth-configs", "create", "x", "--organization", "acme-corp", "--kind", "github",
                  "--client-id", "c", "--client-secret", SECRET, "--config", conf])
    capsys.readouterr()
    _, err = run(capsys, "oauth-configs", "create", "x", "--organization", "acme-corp", "--kind", "github",
                 "--client-id", "c", "--config", conf, status=1)
    assert err == "error: give the client secret with --client-secret-env NAME or --client-secret-stdin\n"
    _, err = run(capsys, "oauth-configs", "create", "x", "--organization", "acme-corp", "--kind", "github",
                 "--client-id", "c", "--client-secret-env", "UNSET_VARIABLE_XYZ", "--config", conf, status=1)
    assert err == "error: environment variable UNSET_VARIABLE_XYZ is not set\n"
    with pytest.raises(SystemExit):
        cli.main(["oauth-configs", "create", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "never from the command line" in help_text


@pytest.mark.parametrize(("argv", "error"), [
    (["servers", "create", "filed", "--organization", "acme-corp", "--oauth-config", "idp",
      "--issuer", "https://x.example", "--resource", "https://x.example/mcp"],
     "error: server 'filed' is file-managed (read-only here): change it in the configuration file"),
    (["servers", "create", "clash", "--organization", "acme-corp", "--oauth-config", "idp",
      "--issuer", "https://filed.example", "--resource", "https://filed.example/other"],
     "error: server 'clash' would answer where file-managed tenant 'filed' does"),
    (["servers", "update", "filed", "--resource-name", "x"],
     "error: server 'filed' is file-managed (read-only here): change it in the configuration file"),
    (["servers", "delete", "filed"],
     "error: server 'filed' is file-managed (read-only here): change it in the configuration file"),
    (["servers", "create", "b", "--organization", "acme-corp", "--oauth-config", "idp",
      "--issuer", "ftp://b.example", "--resource", "https://b.example/mcp", "--scope", "mcp",
      "--required-scope", "admin"],
     "error: --issuer: must be an http or https URL; --required-scope: 'admin' is not in scopes"),
    (["servers", "create", "b", "--organization", "acme-corp", "--oauth-config", "nope",
      "--issuer", "https://b.example", "--resource", "https://b.example/mcp"],
     "error: --oauth-config: no OAuth configuration acme-corp/nope"),
    (["servers", "create", "b", "--organization", "acme-corp", "--oauth-config", "idp",
      "--issuer", "https://b.example", "--resource", "https://b.example/mcp", "--policy", "ttl=5"],
     "error: --policy 'ttl=5': must be KEY=SECONDS, KEY one of access_token_ttl, refresh_token_ttl, code_ttl, "
     "session_ttl, refresh_grace, upstream_refresh_skew, upstream_refresh_lease, consent_ttl, unused_client_ttl"),
    (["servers", "show", "nope"], "error: no server 'nope'"),
    (["oauth-configs", "create", "o2", "--organization", "acme-corp", "--kind", "oidc", "--client-id", "c",
      "--client-secret-env", "IDP_SECRET"],
     "error: --issuer: missing (required for kind = \"oidc\")"),
    (["oauth-configs", "show", "nope", "--organization", "acme-corp"], "error: no OAuth configuration acme-corp/nope"),
    (["organizations", "create", "acme-corp"], "error: organization 'acme-corp' exists already"),
    (["organizations", "show", "nope"], "error: no organization 'nope'"),
    (["organizations", "update", "acme-corp"], "error: nothing to change: give --display-name"),
    (["organizations", "create", "Not A Slug"],
     "error: name: 'Not A Slug' must be 1-63 characters of a-z 0-9 _ - (starting with a letter or digit)"),
])
def test_each_error_is_one_line_and_status_1(conf, capsys, argv, error):
    make(conf, capsys)
    out, err = run(capsys, *argv, "--config", conf, status=1)
    assert (out, err) == ("", error + "\n")


def test_a_config_file_that_is_missing_or_on_memory_is_one_line(tmp_path, capsys):
    _, err = run(capsys, "organizations", "list", "--config", str(tmp_path / "none.toml"), status=1)
    assert err.count("\n") == 1 and "cannot be read" in err
    memory = tmp_path / "m.toml"
    memory.write_text(CONFIG.replace('database = "sqlite:///{db}"', 'database = "memory://"').format(keys=tmp_path / "k"))
    _, err = run(capsys, "organizations", "list", "--config", str(memory), status=1)
    assert err == f"error: {memory}: database is memory://, which keeps nothing: use a SQL database\n"


def test_a_named_presets_settings_through_the_cli(conf, capsys):
    make(conf, capsys)
    run(capsys, "oauth-configs", "create", "corp", "--organization", "acme-corp", "--kind", "entra",
        "--tenant", "organizations", "--client-id", "cid", "--client-secret-env", "IDP_SECRET", "--config", conf)
    run(capsys, "oauth-configs", "create", "pool", "--organization", "acme-corp", "--kind", "cognito",
        "--user-pool-id", "eu-west-1_AbC123", "--client-id", "cid", "--client-secret-env", "IDP_SECRET",
        "--config", conf)
    out, _ = run(capsys, "oauth-configs", "list", "--config", conf)
    assert out.splitlines() == ["acme-corp/corp\tentra\torganizations", "acme-corp/idp\toidc\thttps://idp.example",
                                "acme-corp/pool\tcognito\teu-west-1_AbC123"]
    _, err = run(capsys, "oauth-configs", "create", "bad", "--organization", "acme-corp", "--kind", "entra",
                 "--client-id", "cid", "--client-secret-env", "IDP_SECRET", "--config", conf, status=1)
    assert "tenant" in err and "missing" in err
