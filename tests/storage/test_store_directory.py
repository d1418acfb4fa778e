"""The directory in the database (organizations, OAuth configurations,
servers; core/effects.py), run against every backend: memory, SQLite,
PostgreSQL, MariaDB."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy

from mcp_oauth_proxy.core.errors import DirectoryRefused
from mcp_oauth_proxy.core.models import Revocation
from mcp_oauth_proxy.storage.token_cache import TokenCache
from storage_records import SECRET, config, grant, org, server, with_tokens


def refused(match: str) -> Any:
    return pytest.raises(DirectoryRefused, match=match)


@pytest.fixture
def filled(store: Any) -> Any:
    store.create_organization(org())
    store.create_oauth_config(config())
    store.create_oauth_config(config("other", client_id="cid-2", kind="github", issuer=None, scopes=None))
    store.create_server(server())
    return store


def test_organizations_are_created_listed_updated_and_deleted(store):
    assert store.list_organizations() == [] and store.get_organization("acme-corp") is None
    store.create_organization(org())
    store.create_organization(org("beta", "Beta"))
    with refused("organization 'beta' exists already"):
        store.create_organization(org("beta", "Another"))
    assert store.list_organizations() == [org(), org("beta", "Beta")]
    store.update_organization(org("beta", "Beta Ltd"))
    assert store.get_organization("beta") == org("beta", "Beta Ltd")
    with refused("no organization 'gamma'"):
        store.update_organization(org("gamma", "G"))
    store.delete_organization("beta")
    with refused("no organization 'beta'"):
        store.delete_organization("beta")
    assert store.list_organizations() == [org()]


def test_an_organization_owning_configurations_or_servers_is_not_deleted(filled):
    with refused(r"organization 'acme-corp' still owns OAuth configuration\(s\) idp, other and server\(s\) acme"):
        filled.delete_organization("acme-corp")
    assert filled.get_organization("acme-corp") == org()


def test_an_oauth_configuration_round_trips_with_its_secret_opened(filled):
    assert filled.get_oauth_config("acme-corp", "idp") == config()
    assert filled.get_oauth_config("acme-corp", "idp").client_secret == SECRET
    assert filled.get_oauth_config("acme-corp", "nope") is None
    assert filled.get_oauth_config("beta", "idp") is None
    assert [c.name for c in filled.list_oauth_configs()] == ["idp", "other"]
    assert filled.list_oauth_configs("beta") == []
    assert filled.list_oauth_configs("acme-corp")[1] == config("other", client_id="cid-2", kind="github",
                                                                issuer=None, scopes=None)


def test_an_oauth_configuration_needs_its_organization_and_a_free_name(filled):
    with refused("no organization 'beta'"):
        filled.create_oauth_config(config(organization="beta"))
    with refused("OAuth configuration acme-corp/idp exists already"):
        filled.create_oauth_config(config(client_id="x"))
    filled.create_organization(org("beta", "Beta"))
    filled.create_oauth_config(config(organization="beta"))  # names are per organization
    with refused("no OAuth configuration acme-corp/nope"):
        filled.update_oauth_config(config("nope"))


def test_the_client_secret_never_rests_in_plain_text(filled):
    engine = getattr(filled, "engine", None)
    if engine is None:
        assert SECRET not in filled.dump()
        return
    with engine.connect() as conn:
        rows = conn.execute(sqlalchemy.text("SELECT * FROM oauth_configs")).all()
    assert rows and SECRET not in repr(rows)


def test_a_sealed_secret_moved_to_another_record_does_not_open(store):
    engine = getattr(store, "engine", None)
    if engine is None:
        pytest.skip("the memory store's records cannot be edited from outside")
    store.create_organization(org())
    store.create_oauth_config(config())
    store.create_oauth_config(config("copy", client_secret="another"))
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(
            "UPDATE oauth_configs SET client_secret = (SELECT s FROM (SELECT client_secret AS s FROM oauth_configs"
            " WHERE name = 'idp') AS x) WHERE name = 'copy'"))
    from mcp_oauth_proxy.core.errors import DecryptionFailed
    with pytest.raises(DecryptionFailed):
        store.get_oauth_config("acme-corp", "copy")


def test_servers_are_created_found_listed_updated_and_deleted(filled):
    assert filled.get_server("acme") == server()
    assert filled.get_server("nope") is None
    filled.create_organization(org("beta", "Beta"))
    filled.create_oauth_config(config(organization="beta"))
    filled.create_server(server("b1", organization="beta", backend="http://127.0.0.1:9/mcp",
                                forward_upstream_token_header="X-Up", resource_name="B one"))
    assert [s.slug for s in filled.list_servers()] == ["acme", "b1"]
    assert [s.slug for s in filled.list_servers("beta")] == ["b1"]
    assert filled.get_server("b1").resource_name == "B one"
    assert filled.update_server(server(scopes=("mcp",), required_scopes=())) == 0
    assert filled.get_server("acme") == server(scopes=("mcp",), required_scopes=())
    assert filled.delete_server("b1") == 0
    assert filled.get_server("b1") is None
    with refused("no server 'b1'"):
        filled.delete_server("b1")
    with refused("no server 'b1'"):
        filled.update_server(server("b1", organization="beta"))


def test_a_server_is_refused_where_its_references_or_places_are_wrong(filled):
    with refused("no organization 'beta'"):
        filled.create_server(server("b", organization="beta"))
    with refused("no OAuth configuration acme-corp/nope"):
        filled.create_server(server("b", oauth_config="nope"))
    with refused("server 'acme' exists already"):
        filled.create_server(server(issuer="https://elsewhere.example", resource="https://elsewhere.example/mcp"))
    with refused("issuer https://acme.example is taken by another server"):
        filled.create_server(server("b", issuer="https://acme.example"))
    with refused("resource https://acme.example/mcp is taken by another server"):
        filled.create_server(server("b", resource="https://acme.example/mcp"))
    filled.create_organization(org("beta", "Beta"))
    filled.create_oauth_config(config(organization="beta"))
    with refused("no OAuth configuration acme-corp/nope"):
        filled.update_server(server(oauth_config="nope"))
    with refused("server 'acme': its organization cannot change"):
        filled.update_server(server(organization="beta"))
    filled.create_server(server("b"))
    with refused("issuer https://acme.example is taken by another server"):
        filled.update_server(server("b", issuer="https://acme.example"))
    assert [s.slug for s in filled.list_servers()] == ["acme", "b"]


def test_an_oauth_configuration_in_use_is_not_deleted_naming_its_servers(filled):
    filled.create_server(server("zeta"))
    with refused(r"OAuth configuration acme-corp/idp is used by server\(s\) acme, zeta"):
        filled.delete_oauth_config("acme-corp", "idp")
    filled.delete_oauth_config("acme-corp", "other")
    with refused("no OAuth configuration acme-corp/other"):
        filled.delete_oauth_config("acme-corp", "other")
    filled.delete_server("acme")
    filled.delete_server("zeta")
    filled.delete_oauth_config("acme-corp", "idp")
    assert filled.list_oauth_configs() == []


def test_another_configuration_revokes_the_servers_grants_and_records_them(filled):
    filled.create_server(server("zeta"))
    a1, _ = with_tokens(filled, grant("acme", "g1"))
    a2, _ = with_tokens(filled, grant("acme", "g2"))
    with_tokens(filled, grant("acme", "g3"))
    filled.revoke_grant("acme", "g3")  # revoked already: not counted
    z, _ = with_tokens(filled, grant("zeta", "g1"))
    # Editing the configuration in place (a rotated secret) keeps them.
    filled.update_oauth_config(config(client_secret="rotated"))
    assert filled.get_oauth_config("acme-corp", "idp").client_secret == "rotated"
    assert filled.update_server(server(scopes=("mcp",), required_scopes=())) == 0
    assert filled.get_access_token("acme", a1.token_hash) == a1
    assert filled.update_server(server(oauth_config="other")) == 2
    assert filled.get_server("acme").oauth_config == "other"
    for token in (a1, a2):
        assert filled.get_access_token("acme", token.token_hash) is None
    assert filled.get_grant("acme", "g1") is None
    assert filled.get_access_token("zeta", z.token_hash) == z  # another server's stay
    recorded = {(r.tenant, r.kind, r.revoked) for r in filled.revocations_since(0)}
    assert {("acme", Revocation.GRANT, "g1"), ("acme", Revocation.GRANT, "g2")} <= recorded
    assert ("zeta", Revocation.GRANT, "g1") not in recorded
    assert filled.update_server(server(oauth_config="idp")) == 0  # none left to revoke


def test_deleting_a_server_revokes_its_grants(filled):
    at, _ = with_tokens(filled, grant("acme", "g1"))
    assert filled.delete_server("acme") == 1
    assert filled.get_access_token("acme", at.token_hash) is None


def test_the_version_moves_with_every_change_and_only_then(store):
    seen = [store.directory_version()]
    assert seen == [0]

    def moved(change: Any) -> None:
        change()
        seen.append(store.directory_version())
        assert seen[-1] > seen[-2]

    def stays(change: Any) -> None:
        with pytest.raises(DirectoryRefused):
            change()
        assert store.directory_version() == seen[-1]

    moved(lambda: store.create_organization(org()))
    stays(lambda: store.create_organization(org()))
    moved(lambda: store.update_organization(org(display_name="ACME")))
    moved(lambda: store.create_oauth_config(config()))
    stays(lambda: store.create_oauth_config(config()))
    moved(lambda: store.update_oauth_config(config(client_secret="new")))
    moved(lambda: store.create_server(server()))
    stays(lambda: store.create_server(server("b", issuer="https://acme.example")))
    moved(lambda: store.update_server(server(resource_name="A")))
    stays(lambda: store.delete_oauth_config("acme-corp", "idp"))
    moved(lambda: store.delete_server("acme"))
    moved(lambda: store.delete_oauth_config("acme-corp", "idp"))
    moved(lambda: store.delete_organization("acme-corp"))
    store.list_organizations(), store.load_directory()
    assert store.directory_version() == seen[-1]


def test_a_secret_that_does_not_open_keeps_only_its_own_servers_from_loading(store, caplog):
    engine = getattr(store, "engine", None)
    if engine is None:
        pytest.skip("the memory store's records cannot be edited from outside")
    store.create_organization(org())
    store.create_oauth_config(config())
    store.create_oauth_config(config("copy", client_secret="another"))
    store.create_server(server())
    store.create_server(server("broken", oauth_config="copy"))
    with engine.begin() as conn:  # sealed for another record: it does not open here
        conn.execute(sqlalchemy.text(
            "UPDATE oauth_configs SET client_secret = (SELECT s FROM (SELECT client_secret AS s FROM oauth_configs"
            " WHERE name = 'idp') AS x) WHERE name = 'copy'"))
    state = store.load_directory()
    assert [c.name for c in state.oauth_configs] == ["idp"]
    assert "OAuth configuration acme-corp/copy: its client secret does not open" in caplog.text


def test_the_directory_loads_servers_with_the_configurations_they_use(filled):
    filled.create_server(server("zeta", oauth_config="other"))
    filled.create_oauth_config(config("unused"))
    state = filled.load_directory()
    assert state.version == filled.directory_version()
    assert state.servers == (server(), server("zeta", oauth_config="other"))
    assert [(c.name, c.client_secret) for c in state.oauth_configs] == [("idp", SECRET), ("other", SECRET)]


def test_a_token_cache_forgets_the_tokens_of_a_server_whose_grants_went(filled):
    cache = TokenCache(filled, ttl=300)
    at, _ = with_tokens(filled, grant("acme", "g1"))
    assert cache.get_access_token("acme", at.token_hash) == at
    assert cache.remembered("acme", at.token_hash) == at
    assert cache.update_server(server(oauth_config="other")) == 1
    assert cache.remembered("acme", at.token_hash) is None
    assert cache.get_access_token("acme", at.token_hash) is None
    assert cache.list_servers() == [server(oauth_config="other")]  # the rest forwarded
