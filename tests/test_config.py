"""The TOML config: one clear message per problem, naming its key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import httpx
import pytest

from mcp_oauth_proxy import config
from mcp_oauth_proxy.app import upstream_source
from mcp_oauth_proxy.upstream.providers import NotReady, OidcDiscovery, Static

GOOD = """
[server]
listen = "127.0.0.1:8000"
database = "memory://"
trusted_proxies = ["10.0.0.0/8"]

[[tenants]]
slug = "acme"
issuer = "http://acme.localhost:8000"
resource = "http://acme.localhost:8000/mcp"
backend = "http://127.0.0.1:9000/mcp"
scopes = ["mcp"]

[tenants.upstream]
kind = "oidc"
issuer = "https://login.example.com"
client_id = "cid"
client_secret_env = "ACME_SECRET"
scopes = ["openid", "profile", "email"]

[tenants.policy]
access_token_ttl = 600
refresh_grace = 10
"""


def problems(text: str) -> list[str]:
    with pytest.raises(config.ConfigError) as info:
        config.parse(tomllib.loads(text))
    return info.value.problems


def test_good_config_is_structured(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    c = config.load(path)
    t = c.tenants[0]
    assert c.server.trusted_proxies == ["10.0.0.0/8"] and t.backend == "http://127.0.0.1:9000/mcp"
    assert t.policy.access_token_ttl == 600 and t.policy.refresh_grace == 10
    assert t.upstream.kind == "oidc" and t.upstream.scopes == ["openid", "profile", "email"]


def test_the_example_config_is_valid() -> None:
    example = Path(__file__).parent.parent / "examples" / "mcp-oauth-proxy.toml"
    assert config.load(example).tenants[0].upstream.kind == "github"


@pytest.mark.parametrize(("edit", "expected"), [
    (('client_id = "cid"\n', ""), "tenants[0].upstream.client_id: missing (or set client_id_env)"),
    (('kind = "oidc"', 'kind = "ping"'), "tenants[0].upstream.kind: must be one of oidc, github, google, auth0, oauth2, entra, okta, keycloak, gitlab, cognito, discord, slack, ghes, dev"),
    (('kind = "oidc"\n', ""), "tenants[0].upstream.kind: missing"),
    (('scopes = ["mcp"]', 'scopes = "mcp"'), "tenants[0].scopes: must be a list"),
    (("access_token_ttl = 600", 'access_token_ttl = "10m"'), "tenants[0].policy.access_token_ttl: must be an integer"),
    (('listen = "127.0.0.1:8000"', "listen = 8000"), "server.listen: must be a string"),
    (('listen = "127.0.0.1:8000"', 'listen = "nowhere"'), "server.listen: must be HOST:PORT, like 127.0.0.1:8000"),
    (("refresh_grace = 10", "refresh_grace = 10\nbogus = 1"), "tenants[0].policy.bogus: unknown key"),
    (('["10.0.0.0/8"]', '["ten"]'), "server.trusted_proxies[0]: must be an IP address or network"),
    (('database = "memory://"', 'database = "memory://"\nmax_forward_body = 0'),
     "server.max_forward_body: must be positive"),
    (('database = "memory://"', 'database = "memory://"\nbody_timeout = 0'), "server.body_timeout: must be positive"),
    (('database = "memory://"', 'database = "memory://"\nkeep_alive_timeout = -1'),
     "server.keep_alive_timeout: must be positive"),
    (('database = "memory://"', 'database = "memory://"\ndatabase_timeout = "5s"'),
     "server.database_timeout: must be a number"),
    (('database = "memory://"', 'database = "memory://"\nread_timeout = 5'), "server.read_timeout: unknown key"),
    (('database = "memory://"', 'database = "memory://"\noutbound_proxy = "socks5://proxy:1080"'),
     "server.outbound_proxy: must be an http:// proxy URL, like http://proxy.internal:3128"),
    (('database = "memory://"', 'database = "memory://"\nca_bundle = "/no/such/ca.pem"'),
     "server.ca_bundle: /no/such/ca.pem is not a readable PEM file of certificates"),
    (('issuer = "https://login.example.com"\n', ""), 'tenants[0].upstream.issuer: missing (required for kind = "oidc")'),
    (('slug = "acme"\n', ""), "tenants[0].slug: missing"),
    (('resource = "http://acme.localhost:8000/mcp"', 'resource = "ftp://x"'), "tenants[0].resource: must be an http or https URL"),
])
def test_one_clear_message_per_problem(edit: tuple[str, str], expected: str) -> None:
    assert edit[0] in GOOD
    assert problems(GOOD.replace(edit[0], edit[1], 1)) == [expected]


def test_problems_in_the_second_tenant_name_it() -> None:
    second = GOOD[GOOD.index("[[tenants]]"):].replace('"acme"', '"globex"').replace("acme.", "globex.")
    text = GOOD + second.replace('kind = "oidc"', 'kind = "nope"')
    assert problems(text) == ["tenants[1].upstream.kind: must be one of oidc, github, google, auth0, oauth2, entra, okta, keycloak, gitlab, cognito, discord, slack, ghes, dev"]


def test_duplicate_tenants_and_no_tenants() -> None:
    assert problems(GOOD + GOOD[GOOD.index("[[tenants]]"):]) == [
        "tenants[1].slug: 'acme' is used by another tenant", "tenants[1].issuer: used by another tenant"]
    # With nothing to serve them from, the file must have tenants; with a
    # database, servers made with the CLI may be all there is.
    assert problems('[server]\nlisten = "127.0.0.1:1"\n') == [
        "tenants: at least one [[tenants]] is needed, or a database for servers made with "
        "`mcp-oauth-proxy servers create`"]
    assert config.parse(tomllib.loads('[server]\nlisten = "127.0.0.1:1"\ndatabase = "sqlite:///x.db"\n')).tenants == []


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="cannot be read"):
        config.load(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.load(bad)


def test_secrets_from_the_environment() -> None:
    c = config.parse(tomllib.loads(GOOD))
    up = c.tenants[0].upstream
    source = upstream_source(up, {"ACME_SECRET": "s3cret"})
    assert isinstance(source, OidcDiscovery) and source.issuer == "https://login.example.com"
    assert isinstance(upstream_source(up, {}), NotReady)
    assert config.warnings(c, {}) == [
        "tenants[0].upstream.client_secret_env: environment variable ACME_SECRET is not set; "
        "logins to this tenant fail until it is"]
    assert config.warnings(c, {"ACME_SECRET": "s3cret"}) == []


def test_secret_in_file_is_not_in_repr() -> None:
    text = GOOD.replace('client_secret_env = "ACME_SECRET"', 'client_secret = "file-secret-value"')
    c = config.parse(tomllib.loads(text))
    assert "file-secret-value" not in repr(c)
    source = upstream_source(c.tenants[0].upstream, {})
    assert isinstance(source, OidcDiscovery)


def test_github_preset_from_config() -> None:
    text = GOOD.replace('kind = "oidc"', 'kind = "github"').replace('issuer = "https://login.example.com"\n', "")
    c = config.parse(tomllib.loads(text.replace('scopes = ["openid", "profile", "email"]', "")))
    source = upstream_source(c.tenants[0].upstream, {"ACME_SECRET": "s"})
    assert isinstance(source, Static)
    up = source.upstream
    assert up.authorization_endpoint == "https://github.com/login/oauth/authorize"
    assert up.token_endpoint == "https://github.com/login/oauth/access_token"
    assert up.userinfo_endpoint == "https://api.github.com/user"
    assert up.user_id_claim == "id" and not up.oidc and up.scopes == ("read:user",)


def test_upstream_token_header_opt_in() -> None:
    with_header = GOOD.replace('scopes = ["mcp"]', 'scopes = ["mcp"]\nforward_upstream_token_header = "X-Upstream-Token"', 1)
    assert config.parse(tomllib.loads(with_header)).tenants[0].forward_upstream_token_header == "X-Upstream-Token"
    assert config.parse(tomllib.loads(GOOD)).tenants[0].forward_upstream_token_header is None
    key = "tenants[0].forward_upstream_token_header"
    for header, expected in [
        ("X Upstream", f"{key}: must be an HTTP header name, like X-Upstream-Token"),
        ("", f"{key}: must be an HTTP header name, like X-Upstream-Token"),
        ("Authorization", f"{key}: Authorization is a header the forwarder sets or passes on; name another"),
        ("X-MCP-Token", f"{key}: X-MCP-Token is a header the forwarder sets or passes on; name another"),
        ("mcp-session-id", f"{key}: mcp-session-id is a header the forwarder sets or passes on; name another"),
        # A backend may read "_" as "-" (WSGI, CGI): these are the same names spelt otherwise.
        ("X_MCP_User", f"{key}: X_MCP_User is a header the forwarder sets or passes on; name another"),
        ("Mcp_Session_Id", f"{key}: Mcp_Session_Id is a header the forwarder sets or passes on; name another"),
        ("proxy_authorization", f"{key}: proxy_authorization is a header the forwarder sets or passes on; "
                                "name another"),
        # Ones it says itself, or drops from clients for what backends believe of them (a second review:
        # the upstream token went out as the right-most X-Forwarded-For).
        *((name, f"{key}: {name} is a header the forwarder sets or passes on; name another")
          for name in ("X-Forwarded-For", "X_Forwarded_Host", "Forwarded", "Via", "X-Real-IP", "Remote-User",
                       "X-Auth-Request-User", "X-Amzn-Oidc-Identity", "X-Original-URL", "X-HTTP-Method-Override",
                       "Set-Cookie", "X-Client-Cert", "Impersonate-User", "Fly-Client-IP", "X-Middleware-Subrequest")),
    ]:
        text = with_header.replace('"X-Upstream-Token"', f'"{header}"')
        assert problems(text) == [expected], header
    assert problems(with_header.replace('backend = "http://127.0.0.1:9000/mcp"\n', "")) == [
        f"{key}: needs backend (it is a header of the forwarded requests)"]
    assert problems(GOOD.replace('scopes = ["mcp"]', "forward_upstream_token_header = 1", 1)) == [
        f"{key}: must be a string"]


def test_the_forwarding_example_passes_check_config(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from mcp_oauth_proxy.cli import main

    example = Path(__file__).parent.parent / "examples" / "forward-to-backend.toml"
    monkeypatch.setenv("OIDC_CLIENT_ID", "example-client")
    monkeypatch.setenv("OIDC_CLIENT_SECRET", "example-secret")
    assert main(["check-config", str(example)]) == 0
    out, err = capsys.readouterr()
    assert "ok (1 tenant(s))" in out and "warning" not in err
    tenant = config.load(example).tenants[0]
    assert tenant.backend == "http://127.0.0.1:9000/mcp"
    assert tenant.forward_upstream_token_header == "X-Upstream-Token"


def test_the_forwarded_body_cap_reaches_the_forwarder() -> None:
    from mcp_oauth_proxy.app import build_site, forwarder

    parsed = config.parse(tomllib.loads(GOOD.replace('database = "memory://"',
                                                     'database = "memory://"\nmax_forward_body = 4096')))
    assert parsed.server.max_forward_body == 4096
    assert forwarder(parsed, build_site(parsed, {"ACME_SECRET": "s"})).max_body == 4096
    assert config.parse(tomllib.loads(GOOD)).server.max_forward_body == 10 * 1024 * 1024


def test_idle_connections_outlive_the_clients_own_pool_expiry() -> None:
    """Equal timeouts race: an httpx client (the MCP SDKs') reuses a
    connection at 4.99 s just as the server closes it at 5 s, and the
    request fails with "server disconnected"."""
    assert config.ServerConfig().keep_alive_timeout > httpx.Limits().keepalive_expiry


MACHINE = GOOD.replace('scopes = ["mcp"]\n', 'scopes = ["mcp"]\nid_jag_issuers = ["upstream", "https://partner.example"]\n',
                       1) + """
[[tenants.machine_clients]]
client_id = "nightly-job"
secret_sha256 = "{sha}"

[[tenants.machine_clients]]
client_id = "agent"
grant_types = ["jwt-bearer"]
token_endpoint_auth_method = "private_key_jwt"
jwks_uri = "https://keys.example/agent.jwks"
"""


def test_machine_clients_and_id_jag_issuers_reach_the_tenant() -> None:
    from mcp_oauth_proxy.app import tenant

    parsed = config.parse(tomllib.loads(MACHINE.replace("{sha}", "a" * 64)))
    t = tenant(parsed.tenants[0])
    assert t.id_jag_issuers == ("upstream", "https://partner.example")
    nightly, agent = t.machine_clients
    assert nightly.client_id == "nightly-job" and nightly.grant_types == ("client_credentials",)
    assert nightly.secret_hash == "a" * 64 and nightly.token_endpoint_auth_method == "client_secret_basic"
    assert agent.grant_types == ("urn:ietf:params:oauth:grant-type:jwt-bearer",) and agent.jwks_uri


@pytest.mark.parametrize("edit, expected", [
    (("{sha}", "not-a-hash"), "tenants[0].machine_clients[0].secret_sha256: must be the secret's SHA-256"),
    (('client_id = "nightly-job"\nsecret_sha256 = "{sha}"', 'client_id = "nightly-job"'),
     "tenants[0].machine_clients[0].secret_sha256: client_secret_basic needs the client's secret"),
    (('jwks_uri = "https://keys.example/agent.jwks"', ""), "tenants[0].machine_clients[1].jwks: private_key_jwt"),
    (('jwks_uri = "https://keys.example/agent.jwks"', "jwks = 'not json'"),
     "tenants[0].machine_clients[1].jwks: must be a JWK Set as JSON"),
    (('grant_types = ["jwt-bearer"]', 'grant_types = ["authorization_code"]'),
     "tenants[0].machine_clients[1].grant_types: must name grants"),
    (('client_id = "agent"', 'client_id = "nightly-job"'), "is declared twice"),
    (('client_id = "agent"', 'client_id = "https://agent.example/doc"'), "not an https URL"),
    (('"https://partner.example"', '"partner"'), "tenants[0].id_jag_issuers[1]: must be an http or https URL"),
    (('kind = "oidc"', 'kind = "github"'), "tenants[0].id_jag_issuers[0]: the upstream (github) has no issuer"),
])
def test_bad_machine_clients_and_id_jag_issuers_are_named(edit: tuple[str, str], expected: str) -> None:
    text = MACHINE.replace(*edit).replace("{sha}", "a" * 64)
    found = [p for p in problems(text) if expected in p]
    assert found, problems(text)


PRESET = """
[[tenants]]
slug = "acme"
issuer = "https://acme.example.com"
resource = "https://acme.example.com/mcp"

[tenants.upstream]
client_id = "cid"
client_secret = "s"
"""


@pytest.mark.parametrize(("settings", "expected"), [
    ('kind = "entra"', ['tenants[0].upstream.tenant: missing (required for kind = "entra": the directory (tenant) '
                        'id, common or organizations)']),
    ('kind = "entra"\ntenant = "contoso.onmicrosoft.com"',
     ["tenants[0].upstream.tenant: must be the directory (tenant) id (a GUID, in lower case), common or organizations"]),
    ('kind = "entra"\ntenant = "9B3C1D2E-4F5A-4B6C-8D7E-0F1A2B3C4D5E"',
     ["tenants[0].upstream.tenant: must be the directory (tenant) id (a GUID, in lower case), common or organizations"]),
    ('kind = "okta"', ['tenants[0].upstream.issuer: missing (required for kind = "okta": https://ORG.okta.com, or a '
                       'custom authorization server\'s https://ORG.okta.com/oauth2/ID)']),
    ('kind = "okta"\nissuer = "https://dev-1.okta.com/oauth2/v1/authorize"',
     ["tenants[0].upstream.issuer: must be the org's URL or a custom authorization server's "
      "(…/oauth2/default, …/oauth2/ID)"]),
    ('kind = "keycloak"', ['tenants[0].upstream.issuer: missing (required for kind = "keycloak": the realm\'s URL, '
                           'like https://keycloak.example/realms/acme)']),
    ('kind = "keycloak"\nissuer = "https://keycloak.example/"',
     ["tenants[0].upstream.issuer: must be a realm's URL, like https://keycloak.example/realms/acme"]),
    ('kind = "cognito"', ['tenants[0].upstream.user_pool_id: missing (required for kind = "cognito": the user '
                          'pool\'s id, like eu-west-1_AbC123)']),
    ('kind = "cognito"\nuser_pool_id = "AbC123"',
     ["tenants[0].upstream.user_pool_id: must be a user pool id, its region first, like eu-west-1_AbC123"]),
    ('kind = "ghes"', ['tenants[0].upstream.domain: missing (required for kind = "ghes": the server\'s host name, '
                       'like github.acme.example)']),
    ('kind = "ghes"\ndomain = "https://github.acme.example"',
     ["tenants[0].upstream.domain: must be a host name, like example.eu.auth0.com"]),
    ('kind = "okta"\nissuer = "https://dev-1.okta.com"\ntenant = "common"',
     ['tenants[0].upstream.tenant: only for kind = "entra"']),
    ('kind = "gitlab"\nuser_pool_id = "eu-west-1_AbC123"', ['tenants[0].upstream.user_pool_id: only for kind = "cognito"']),
    ('kind = "gitlab"\nissuer = "gitlab.acme.example"', ["tenants[0].upstream.issuer: must be an http or https URL"]),
    ('kind = "keycloak"\nissuer = "http://[::1/realms/x"', ["tenants[0].upstream.issuer: must be an http or https URL"]),
    ('kind = "okta"\nissuer = "http://[::1"', ["tenants[0].upstream.issuer: must be an http or https URL"]),
])
def test_each_preset_names_its_required_settings(settings: str, expected: list[str]) -> None:
    assert problems(PRESET + settings + "\n") == expected


@pytest.mark.parametrize("settings", [
    'kind = "entra"\ntenant = "9b3c1d2e-4f5a-4b6c-8d7e-0f1a2b3c4d5e"', 'kind = "entra"\ntenant = "organizations"',
    'kind = "okta"\nissuer = "https://dev-1.okta.com"', 'kind = "okta"\nissuer = "https://dev-1.okta.com/oauth2/default"',
    'kind = "keycloak"\nissuer = "https://kc.example/auth/realms/acme"', 'kind = "gitlab"',
    'kind = "gitlab"\nissuer = "https://git.acme.example/gitlab"', 'kind = "cognito"\nuser_pool_id = "us-east-1_Xy9"',
    'kind = "discord"', 'kind = "slack"', 'kind = "ghes"\ndomain = "github.acme.example"',
])
def test_each_preset_with_its_settings_is_accepted(settings: str) -> None:
    assert config.parse(tomllib.loads(PRESET + settings + "\n")).tenants[0].upstream.kind in config.KINDS


@pytest.mark.parametrize(("settings", "expected"), [
    ('kind = "entra"\ntenant = "common"', "a multi-tenant Entra upstream (common) has no one issuer to trust"),
    ('kind = "entra"\ntenant = "9b3c1d2e-4f5a-4b6c-8d7e-0f1a2b3c4d5e"',
     "the upstream names people by tid+oid, an ID-JAG by its sub; the two would not be the same person"),
    ('kind = "slack"', "the upstream names people by https://slack.com/team_id+sub, an ID-JAG by its sub; "
                       "the two would not be the same person"),
    ('kind = "oidc"\nissuer = "https://idp.example"\nuser_id_claim = "email"',
     "the upstream names people by email, an ID-JAG by its sub; the two would not be the same person"),
    ('kind = "discord"', "the upstream (discord) has no issuer to sign ID-JAGs as"),
])
def test_id_jags_of_an_upstream_naming_people_otherwise_are_refused(settings: str, expected: str) -> None:
    text = PRESET.replace('resource = "https://acme.example.com/mcp"',
                          'resource = "https://acme.example.com/mcp"\nid_jag_issuers = ["upstream"]')
    assert problems(text + settings + "\n") == [f"tenants[0].id_jag_issuers[0]: {expected}"]
    assert config.parse(tomllib.loads(text + 'kind = "keycloak"\nissuer = "https://kc.example/realms/a"\n'))


@pytest.mark.parametrize("key", ["issuer", "resource"])
def test_an_issuer_or_resource_with_user_info_is_refused(key: str) -> None:
    # RFC 9110 §4.2.4; a resource with it would match no resource a client names.
    value = {"issuer": "http://u@acme.localhost:8000", "resource": "http://u:p@acme.localhost:8000/mcp"}[key]
    text = GOOD.replace(f'{key} = "http://acme.localhost:8000', f'{key} = "{value.removesuffix("/mcp")}', 1)
    assert f"tenants[0].{key}: must not have user info" in problems(text)
