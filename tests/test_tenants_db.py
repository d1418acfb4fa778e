"""Tenants kept in the database (tenants_db.py): served beside the file's,
the file's winning; swapped in by Directory.refresh once the directory's
version moves, unchanged OAuth configurations keeping their upstream source
(its cached discovery); reloaded every second by
housekeeping.follow_directory."""

from __future__ import annotations

import anyio
import pytest

from mcp_oauth_proxy.core.errors import StorageUnavailable
from mcp_oauth_proxy.core.models import OAuthConfig, Organization, Server
from mcp_oauth_proxy.core.tenant import Tenant, Upstream
from mcp_oauth_proxy.directory import Directory
from mcp_oauth_proxy.housekeeping import follow_directory
from mcp_oauth_proxy.storage.memory import MemoryStore
from mcp_oauth_proxy.tenants_db import DatabaseTenants, server_problems
from mcp_oauth_proxy.upstream.providers import OidcDiscovery, PublicOnly, Static

UP = Upstream(authorization_endpoint="https://idp.test/a", token_endpoint="https://idp.test/t", client_id="c")
FILE = Tenant(slug="acme", issuer="https://shared.test", resource="https://shared.test/mcp", upstream=UP)


def config(name: str = "idp", **kw: object) -> OAuthConfig:
    base: dict = dict(kind="oidc", client_id="cid", client_secret="sec", issuer="https://idp.test")
    base.update(kw)
    return OAuthConfig("org", name, **base)


def server(slug: str, issuer: str, **kw: object) -> Server:
    return Server(slug=slug, organization="org", oauth_config=kw.pop("oauth_config", "idp"), issuer=issuer,  # type: ignore[arg-type]
                  resource=issuer + "/mcp", **kw)  # type: ignore[arg-type]


@pytest.fixture
def store() -> MemoryStore:
    s = MemoryStore()
    s.create_organization(Organization("org", "Org", 0))
    s.create_oauth_config(config())
    s.create_oauth_config(config("gh", kind="github", issuer=None))
    return s


def slugs(directory: Directory) -> list[str]:
    return [e.tenant.slug for e in directory.current.entries]


def test_the_databases_servers_are_served_beside_the_files(store):
    store.create_server(server("beta", "https://shared.test/beta", policy={"access_token_ttl": 60},
                               scopes=("mcp", "extra"), backend="http://127.0.0.1:9/mcp"))
    source = DatabaseTenants(store, [FILE])
    directory = Directory(source)
    assert slugs(directory) == ["acme", "beta"]
    assert directory.current.version == store.directory_version()
    beta = directory.current.pick("https", "shared.test", "/beta/oauth/token")
    assert beta is not None and beta.tenant.slug == "beta"
    assert beta.tenant.policy.access_token_ttl == 60 and beta.tenant.scopes == ("mcp", "extra")
    # An organization's upstream: every request of it is public-only.
    assert beta.tenant.upstream is None and isinstance(beta.source, PublicOnly)
    assert isinstance(beta.source.source, OidcDiscovery) and beta.source.source.issuer == "https://idp.test"
    assert directory.current.pick("https", "shared.test", "/oauth/token").tenant.slug == "acme"
    assert source.backend("beta").url == "http://127.0.0.1:9/mcp" and source.backend("acme") is None
    assert "/beta/mcp" in directory.current.resource_paths


def test_a_change_is_swapped_in_by_refresh_and_only_then(store):
    directory = Directory(DatabaseTenants(store, [FILE]))
    assert slugs(directory) == ["acme"] and directory.refresh() is False
    store.create_server(server("beta", "https://beta.test"))
    assert slugs(directory) == ["acme"]
    assert directory.refresh() is True and slugs(directory) == ["acme", "beta"]
    assert directory.refresh() is False
    store.delete_server("beta")
    assert directory.refresh() is True and slugs(directory) == ["acme"]


def test_unchanged_configurations_keep_their_upstream_source(store):
    store.create_server(server("beta", "https://beta.test"))
    store.create_server(server("gamma", "https://gamma.test", oauth_config="gh"))
    directory = Directory(DatabaseTenants(store, [FILE]))
    before = {e.tenant.slug: e.source for e in directory.current.entries}
    store.create_server(server("delta", "https://delta.test"))
    store.update_server(server("gamma", "https://gamma.test", oauth_config="gh", resource_name="G"))
    assert directory.refresh()
    after = {e.tenant.slug: e.source for e in directory.current.entries}
    assert after["acme"] is before["acme"]
    assert after["beta"] is before["beta"] and after["delta"] is before["beta"]  # one configuration, one source
    assert after["gamma"] is before["gamma"]
    store.update_oauth_config(config(client_secret="rotated"))  # edited in place: a new source
    assert directory.refresh()
    rotated = {e.tenant.slug: e.source for e in directory.current.entries}
    assert rotated["beta"] is not before["beta"] and rotated["gamma"] is before["gamma"]
    assert isinstance(rotated["gamma"].source, Static)


def test_the_files_tenants_win_a_slug_or_a_place(store):
    # Made past the CLI's checks (which refuse them), they are not served.
    store.create_server(server("acme", "https://elsewhere.test"))
    store.create_server(server("root", "https://shared.test"))
    store.create_server(server("fine", "https://shared.test/fine"))
    directory = Directory(DatabaseTenants(store, [FILE]))
    assert slugs(directory) == ["acme", "fine"]
    assert directory.current.entry("acme").tenant.issuer == "https://shared.test"
    assert server_problems(server("acme", "https://elsewhere.test"), [FILE]) == [
        "slug 'acme' is a file-managed tenant's"]
    assert server_problems(server("root", "https://shared.test"), [FILE]) == [
        "server 'root' would answer where file-managed tenant 'acme' does"]
    assert server_problems(server("fine", "https://shared.test/fine"), [FILE]) == []


def test_a_server_is_checked_by_the_files_rules(store):
    bad = server("Bad Slug", "ftp://x.test", scopes=("mcp",), required_scopes=("other",), policy={"nope": 1})
    assert server_problems(bad) == ["server.policy: unknown key(s) nope (known: access_token_ttl, "
                                    "refresh_token_ttl, code_ttl, session_ttl, refresh_grace, upstream_refresh_skew, "
                                    "upstream_refresh_lease, consent_ttl, unused_client_ttl)"]
    bad = server("Bad Slug", "ftp://x.test", scopes=("mcp",), required_scopes=("other",))
    problems = server_problems(bad)
    assert any(p.startswith("server.slug:") for p in problems)
    assert "server.issuer: must be an http or https URL" in problems
    assert "server.required_scopes: 'other' is not in scopes" in problems


def test_follow_directory_swaps_in_changes_each_second_and_outlasts_failures(store):
    directory = Directory(DatabaseTenants(store, [FILE]))
    real = store.directory_version
    failing = [True]

    def version() -> int:
        if failing[0]:
            failing[0] = False
            raise StorageUnavailable("away")
        return real()

    store.directory_version = version  # type: ignore[method-assign]

    async def run() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(follow_directory, directory, 0.01)
            store.create_server(server("beta", "https://beta.test"))
            with anyio.fail_after(5):
                while slugs(directory) != ["acme", "beta"]:
                    await anyio.sleep(0.01)
            tasks.cancel_scope.cancel()

    anyio.run(run)


def test_a_named_presets_configuration_is_served_with_its_preset(store):
    store.create_oauth_config(config("corp", kind="entra", issuer=None, tenant="organizations"))
    store.create_server(server("beta", "https://beta.test", oauth_config="corp"))
    entry = Directory(DatabaseTenants(store, [])).current.entry("beta")
    assert isinstance(entry.source.source, OidcDiscovery)
    assert entry.source.source.issuer == "https://login.microsoftonline.com/{tenantid}/v2.0"
    assert entry.source.discovery_url == (
        "https://login.microsoftonline.com/organizations/v2.0/.well-known/openid-configuration")


def test_clashes_found_at_once_are_those_server_clash_finds_one_by_one():
    # The reload finds them all at once (a review: comparing every pair took
    # 10 s for 400 servers); the same answers as comparing each with all.
    import random

    from mcp_oauth_proxy.tenants_db import clashes, server_clash

    hosts = ["a.test", "b.test", "a.test:8443", "c.test", "d.test", "e.test", "f.test", "g.test"]
    paths = ["", "/x", "/x/y", "/x/y/z", "/y", "/xy", "/x//y", "/z/mcp", "/p", "/q/r", "/s", "/t/u/v"]
    clashed = []
    for seed in range(40):
        rng = random.Random(seed)
        servers = []
        for i in range(rng.randrange(2, 14)):
            issuer = f"https://{rng.choice(hosts)}{rng.choice(paths)}"
            if rng.random() < 0.02:
                issuer = "https://[::1"  # no places: it clashes with every server
            servers.append(Server(slug=f"s{i}", organization="org", oauth_config="idp", issuer=issuer,
                                  resource=f"https://{rng.choice(hosts)}{rng.choice(paths)}/mcp"))
        one_by_one = {s.slug: c for s in servers if (c := server_clash(s, servers)) is not None}
        assert clashes(servers) == one_by_one, seed
        clashed.append(len(one_by_one) / len(servers))
    assert 0.2 < sum(clashed) / len(clashed) < 0.8  # sets with clashes and without


def test_follow_directory_reloads_at_most_once_a_second_however_often_it_is_woken():
    # A review: an organization's admin renaming it in a loop made another
    # replica reload every server 114 times in 15 s (each change a notice).
    from mcp_oauth_proxy.housekeeping import Wake

    class Changing:
        reloads = 0
        current = Directory([FILE]).current

        def refresh(self) -> bool:
            self.reloads += 1
            return True

    directory, wake = Changing(), Wake()

    async def run() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(lambda: follow_directory(directory, 60.0, wake=wake, least=0.2))  # type: ignore[arg-type]
            for _ in range(100):  # a notice every 10 ms for a second
                wake.ring()
                await anyio.sleep(0.01)
            tasks.cancel_scope.cancel()

    anyio.run(run)
    assert 1 <= directory.reloads <= 6
