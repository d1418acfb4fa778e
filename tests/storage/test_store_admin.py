"""The administration operations (admin tokens, the audit log, clients and
grants as an operator lists them; core/effects.py), run against every
backend: memory, SQLite, PostgreSQL, MariaDB."""

from __future__ import annotations

import time
from typing import Any

import pytest

from mcp_oauth_proxy.core.errors import DirectoryRefused
from mcp_oauth_proxy.core.models import AdminToken, AuditEvent, GrantInfo, Revocation
from mcp_oauth_proxy.storage.token_cache import TokenCache
import attrs
from storage_records import T0, client, code, config, grant, org, server, with_tokens


def admin(token_id: str = "adm-1", organization: str | None = None, created_at: int = T0) -> AdminToken:
    return AdminToken(token_id=token_id, token_hash=f"hash-of-{token_id}", label=f"Ünïcode label of {token_id}",
                      organization=organization, created_at=created_at)


def audit(at: int = T0, event: str = "login", **kw: Any) -> AuditEvent:
    return AuditEvent(at=at, event=event, **kw)


def info(g: Any, last_used_at: int | None = T0) -> GrantInfo:
    """What an operator sees of a grant with_tokens made (its tokens issued at T0)."""
    return GrantInfo(tenant=g.tenant, grant_id=g.grant_id, client_id=g.client_id, user_id=g.user_id, scope=g.scope,
                     resource=g.resource, created_at=g.created_at, expires_at=g.expires_at, last_used_at=last_used_at)


@pytest.fixture
def orgs(store: Any) -> Any:
    """Two organizations: acme-corp with servers acme and zeta, beta with b1."""
    for name, slugs in (("acme-corp", ("acme", "zeta")), ("beta", ("b1",))):
        store.create_organization(org(name, name.title()))
        store.create_oauth_config(config(organization=name))
        for slug in slugs:
            store.create_server(server(slug, organization=name))
    return store


# -- admin tokens ------------------------------------------------------------------
def test_admin_tokens_are_created_found_by_hash_listed_oldest_first_and_deleted(orgs):
    assert orgs.list_admin_tokens() == [] and orgs.get_admin_token("hash-of-adm-1") is None
    orgs.create_admin_token(admin("adm-2", created_at=T0 + 5))
    orgs.create_admin_token(admin("adm-1", organization="beta"))
    assert orgs.get_admin_token("hash-of-adm-1") == admin("adm-1", organization="beta")
    assert orgs.get_admin_token("HASH-OF-ADM-1") is None  # exact match
    assert orgs.list_admin_tokens() == [admin("adm-1", organization="beta"), admin("adm-2", created_at=T0 + 5)]
    assert orgs.delete_admin_token("adm-1") is True
    assert orgs.delete_admin_token("adm-1") is False
    assert orgs.get_admin_token("hash-of-adm-1") is None
    assert orgs.list_admin_tokens() == [admin("adm-2", created_at=T0 + 5)]


def test_an_admin_token_needs_a_known_organization_and_its_own_id_and_hash(orgs):
    with pytest.raises(DirectoryRefused, match="no organization 'gamma'"):
        orgs.create_admin_token(admin(organization="gamma"))
    orgs.create_admin_token(admin())
    with pytest.raises(DirectoryRefused, match="admin token 'adm-1' exists already"):
        orgs.create_admin_token(admin(organization="beta"))
    with pytest.raises(DirectoryRefused, match="admin token 'adm-9' exists already"):
        orgs.create_admin_token(AdminToken("adm-9", "hash-of-adm-1", "copy", None, T0))
    assert orgs.list_admin_tokens() == [admin()]


def test_an_organizations_admin_tokens_go_with_it(store):
    store.create_organization(org("beta", "Beta"))
    store.create_admin_token(admin("adm-b", organization="beta"))
    store.create_admin_token(admin("adm-global"))
    store.delete_organization("beta")
    store.create_organization(org("beta", "Beta again"))  # inherits none
    assert store.get_admin_token("hash-of-adm-b") is None
    assert store.list_admin_tokens() == [admin("adm-global")]


# -- the audit log -------------------------------------------------------------------
def test_audit_events_are_numbered_and_listed_newest_first(store):
    assert store.list_audit_events(10) == []
    store.record_audit(audit(event="first", tenant="acme", detail={"reason": "ünïcode ✓"}), T0 + 60)
    store.record_audit(audit(T0 + 1, "second", organization="beta", actor="adm-1", client_id="c", user_id="u"),
                       T0 + 60)
    second, first = store.list_audit_events(10)
    assert first.event_id < second.event_id
    assert first == audit(event="first", tenant="acme", detail={"reason": "ünïcode ✓"}, event_id=first.event_id)
    assert second == audit(T0 + 1, "second", organization="beta", actor="adm-1", client_id="c", user_id="u",
                           event_id=second.event_id)
    assert store.list_audit_events(1) == [second]


def _events(store: Any, **filters: Any) -> list[str]:
    return [e.event for e in store.list_audit_events(100, **filters)]


def test_audit_events_are_filtered_by_every_filter_given(store):
    store.record_audit(audit(T0, "a", tenant="acme", client_id="c1", user_id="u1"), T0 + 60)
    store.record_audit(audit(T0 + 1, "b", tenant="acme", client_id="c2", user_id="u1"), T0 + 60)
    store.record_audit(audit(T0 + 2, "a", tenant="globex", client_id="c1", user_id="u2"), T0 + 60)
    store.record_audit(audit(T0 + 3, "c", organization="beta", actor="adm-1"), T0 + 60)
    assert _events(store) == ["c", "a", "b", "a"]
    assert _events(store, tenant="acme") == ["b", "a"]
    assert _events(store, user_id="u1") == ["b", "a"]
    assert _events(store, client_id="c1") == ["a", "a"]
    assert _events(store, event="a") == ["a", "a"]
    assert _events(store, since=T0 + 1) == ["c", "a", "b"]  # on or after
    assert _events(store, until=T0 + 2) == ["b", "a"]  # before
    assert _events(store, since=T0 + 1, until=T0 + 3) == ["a", "b"]
    assert _events(store, event="a", tenant="acme") == ["a"]
    assert _events(store, tenant="ACME") == [] and _events(store, event="d") == []


def test_an_organization_sees_its_own_events_and_its_servers(orgs):
    orgs.record_audit(audit(event="of-acme", tenant="acme"), T0 + 60)
    orgs.record_audit(audit(event="of-zeta", tenant="zeta"), T0 + 60)
    orgs.record_audit(audit(event="of-b1", tenant="b1"), T0 + 60)
    orgs.record_audit(audit(event="of-a-file-tenant", tenant="file-tenant"), T0 + 60)
    orgs.record_audit(audit(event="by-acme-corp", organization="acme-corp", actor="adm-1"), T0 + 60)
    orgs.record_audit(audit(event="by-beta", organization="beta", actor="adm-2"), T0 + 60)
    orgs.record_audit(audit(event="global"), T0 + 60)
    assert _events(orgs, organization="acme-corp") == ["by-acme-corp", "of-zeta", "of-acme"]
    assert _events(orgs, organization="beta") == ["by-beta", "of-b1"]
    assert _events(orgs, organization="beta", tenant="acme") == []
    assert _events(orgs, organization="gamma") == []


def test_the_audit_log_is_paged_by_the_last_event_id_seen(store):
    for n in range(5):
        store.record_audit(audit(T0 + n, f"e{n}", tenant="acme" if n % 2 else "globex"), T0 + 60)
    pages, before = [], None
    while page := store.list_audit_events(2, before=before):
        pages.append([e.event for e in page])
        before = page[-1].event_id
    assert pages == [["e4", "e3"], ["e2", "e1"], ["e0"]]
    newest = store.list_audit_events(1, tenant="acme")[0]
    assert [e.event for e in store.list_audit_events(5, before=newest.event_id, tenant="acme")] == ["e1"]


def test_audit_events_are_swept_when_kept_long_enough_and_never_renumbered(store):
    store.record_audit(audit(event="kept"), T0 + 100)
    for n in range(3):
        store.record_audit(audit(event=f"short-{n}"), T0 + 10)
    newest = store.list_audit_events(1)[0]
    assert store.delete_expired(T0 + 9) == 0
    assert store.delete_expired(T0 + 10, limit=2) == 2
    assert store.delete_expired(T0 + 10, limit=2) == 1
    assert _events(store) == ["kept"]
    store.record_audit(audit(event="later"), T0 + 100)
    assert store.list_audit_events(1)[0].event_id > newest.event_id  # a swept number is not given again


def test_a_rotation_keeps_its_audit_event_exactly_when_it_rotates_and_as_long_as_it_says(store):
    from storage_records import access, issue, refresh

    g = grant(grant_id="g-rot")
    assert issue(store, g, access(g, "at-1"), refresh(g, "rt-1"))

    def rotate(now: int, n: str) -> str:
        event = audit(now, "tokens_refreshed", tenant="acme", client_id=g.client_id, user_id=g.user_id,
                      detail={"grant_id": "g-rot", "n": n})
        outcome = store.rotate_refresh_token("acme", "rt-1", now, 30, access(g, f"at-{n}"), refresh(g, f"rt-{n}"),
                                             event, now + 50)
        return str(outcome.name)

    assert rotate(T0 + 100, "a") == "ROTATED"
    assert rotate(T0 + 200, "b") == "REUSED"  # past the grace: the family is revoked, no event kept
    assert rotate(T0 + 300, "c") == "GONE"
    (kept,) = store.list_audit_events(10)
    assert kept == audit(T0 + 100, "tokens_refreshed", tenant="acme", client_id=g.client_id, user_id=g.user_id,
                         detail={"grant_id": "g-rot", "n": "a"}, event_id=kept.event_id)
    store.delete_expired(T0 + 149)
    assert store.list_audit_events(10) == [kept]
    store.delete_expired(T0 + 150)
    assert store.list_audit_events(10) == []


# -- clients ----------------------------------------------------------------------------
def test_clients_are_listed_by_id_in_pages(store):
    for client_id in ("client-c", "client-a", "client-e", "client-b", "client-d"):
        store.save_client(client(client_id=client_id, expires_at=T0 + 10 if client_id == "client-e" else None))
    store.save_client(client("globex", "client-0"))
    assert [c.client_id for c in store.list_clients("acme", 2)] == ["client-a", "client-b"]
    assert [c.client_id for c in store.list_clients("acme", 2, after="client-b")] == ["client-c", "client-d"]
    assert store.list_clients("acme", 2, after="client-d") == [client(client_id="client-e", expires_at=T0 + 10)]
    assert store.list_clients("acme", 2, after="client-e") == []
    assert store.list_clients("globex", 10) == [client("globex", "client-0")]
    assert store.list_clients("initech", 10) == []


def test_deleting_a_client_revokes_and_records_its_live_grants(store):
    since = int(time.time())
    store.save_client(client())
    store.save_client(client(client_id="client-2"))
    store.save_client(client("globex"))
    at1, rt1 = with_tokens(store, grant(grant_id="g1"))
    at2, _ = with_tokens(store, grant(grant_id="g2", user_id="user-7"))
    with_tokens(store, grant(grant_id="g3"))
    store.revoke_grant("acme", "g3")  # revoked already: not counted
    other, _ = with_tokens(store, grant(grant_id="g4", client_id="client-2"))
    foreign, _ = with_tokens(store, grant("globex", "g1"))
    assert store.delete_client("acme", "client-1") == 2
    assert store.get_client("acme", "client-1") is None
    for token in (at1, at2):
        assert store.get_access_token("acme", token.token_hash) is None
    assert store.get_refresh_token("acme", rt1.token_hash) is None
    assert store.get_grant("acme", "g1") is None
    assert store.get_access_token("acme", other.token_hash) == other  # another client's stay
    assert store.get_access_token("globex", foreign.token_hash) == foreign  # and another tenant's
    recorded = {(r.tenant, r.kind, r.revoked) for r in store.revocations_since(since)}
    assert {("acme", Revocation.GRANT, "g1"), ("acme", Revocation.GRANT, "g2")} <= recorded
    assert ("acme", Revocation.GRANT, "g4") not in recorded and ("globex", Revocation.GRANT, "g1") not in recorded
    assert store.delete_client("acme", "client-1") is None
    assert store.delete_client("acme", "no-such-client") is None
    assert [c.client_id for c in store.list_clients("acme", 10)] == ["client-2"]


def test_a_client_without_grants_is_deleted_revoking_none(store):
    store.save_client(client())
    assert store.delete_client("acme", "client-1") == 0
    assert store.get_client("acme", "client-1") is None


def test_a_token_cache_forgets_the_tokens_of_a_deleted_client(store):
    cache = TokenCache(store, ttl=300)
    store.save_client(client())
    at, _ = with_tokens(store, grant(grant_id="g1"))
    kept, _ = with_tokens(store, grant(grant_id="g2", client_id="client-2"))
    for token in (at, kept):
        assert cache.get_access_token("acme", token.token_hash) == token
    assert cache.delete_client("acme", "client-1") == 1
    assert cache.remembered("acme", at.token_hash) is None
    assert cache.get_access_token("acme", at.token_hash) is None
    assert cache.remembered("acme", kept.token_hash) == kept


# -- grants ------------------------------------------------------------------------------
def test_grants_are_listed_live_only_by_tenant_and_id_in_pages(store):
    live = [grant("acme", "g1"), grant("acme", "g3"), grant("globex", "g0"), grant("globex", "g2")]
    for g in [*live, grant("acme", "g2"), grant("acme", "g4", expires_at=T0 + 100)]:
        with_tokens(store, g)
    store.revoke_grant("acme", "g2")
    assert store.list_grants(T0 + 100, 10) == [info(g) for g in live]  # g4 expired then
    assert store.list_grants(T0 + 99, 10)[2] == info(grant("acme", "g4", expires_at=T0 + 100))
    pages, after = [], None
    while page := store.list_grants(T0 + 100, 3, after=after):
        pages.append([(g.tenant, g.grant_id) for g in page])
        after = (page[-1].tenant, page[-1].grant_id)
    assert pages == [[("acme", "g1"), ("acme", "g3"), ("globex", "g0")], [("globex", "g2")]]
    assert [g.grant_id for g in store.list_grants(T0 + 100, 10, after=("acme", "g9"))] == ["g0", "g2"]


def test_grants_are_filtered_by_every_filter_given(orgs):
    with_tokens(orgs, grant("acme", "g1"))
    with_tokens(orgs, grant("acme", "g2", user_id="user-7"))
    with_tokens(orgs, grant("acme", "g3", client_id="client-2"))
    with_tokens(orgs, grant("zeta", "g1", user_id="user-7"))
    with_tokens(orgs, grant("b1", "g1"))
    with_tokens(orgs, grant("file-tenant", "g1"))

    def listed(**filters: Any) -> list[tuple[str, str]]:
        return [(g.tenant, g.grant_id) for g in orgs.list_grants(T0, 10, **filters)]

    assert listed(tenant="acme") == [("acme", "g1"), ("acme", "g2"), ("acme", "g3")]
    assert listed(user_id="user-7") == [("acme", "g2"), ("zeta", "g1")]
    assert listed(client_id="client-2") == [("acme", "g3")]
    assert listed(tenant="acme", user_id="user-7") == [("acme", "g2")]
    assert listed(organization="acme-corp") == [("acme", "g1"), ("acme", "g2"), ("acme", "g3"), ("zeta", "g1")]
    assert listed(organization="beta") == [("b1", "g1")]
    assert listed(organization="beta", tenant="acme") == []
    assert listed(organization="acme-corp", after=("acme", "g3")) == [("zeta", "g1")]
    assert listed(organization="gamma") == [] and listed(tenant="ACME") == []


def test_a_grant_is_shown_while_live_without_its_upstream_tokens(store):
    g = grant(expires_at=T0 + 100)
    with_tokens(store, g)
    assert store.get_grant_info("acme", "grant-1", T0 + 99) == info(g)
    assert store.get_grant_info("acme", "grant-1", T0 + 100) is None  # expired
    assert store.get_grant_info("globex", "grant-1", T0) is None
    assert store.get_grant_info("acme", "grant-x", T0) is None
    store.revoke_grant("acme", "grant-1")
    assert store.get_grant_info("acme", "grant-1", T0) is None


def test_a_grant_is_last_used_when_its_newest_token_was_issued(store):
    from storage_records import access, refresh

    g = grant(grant_id="g-used")
    store.save_grant_and_code(g, code(g))
    assert store.get_grant_info(tenant="acme", grant_id="g-used", now=T0).last_used_at is None
    first = access(g, "at-1")
    assert store.redeem_code(tenant="acme", code_hash=g.code_hash, now=T0, access=first, refresh=refresh(g, "rt-1"),
                             keep_client=False).name == "ISSUED"
    assert store.get_grant_info(tenant="acme", grant_id="g-used", now=T0).last_used_at == first.issued_at
    later = attrs.evolve(access(g, "at-2"), issued_at=T0 + 600)
    rotated = store.rotate_refresh_token(tenant="acme", token_hash="rt-1", now=T0 + 600, grace=30, access=later,
                                         refresh=refresh(g, "rt-2"))
    assert rotated.name == "ROTATED"
    (info,) = store.list_grants(now=T0 + 600, limit=10, tenant="acme")
    assert info.last_used_at == T0 + 600


def test_a_clients_last_use_is_its_newest_grants(store):
    from storage_records import access

    for grant_id, client_id, at in (("g1", "c1", T0 + 5), ("g2", "c1", T0 + 9), ("g3", "c2", T0 + 7)):
        g = grant(grant_id=grant_id, client_id=client_id)
        store.save_grant_and_code(g, code(g))
        assert store.redeem_code(tenant="acme", code_hash=g.code_hash, now=T0, refresh=None, keep_client=False,
                                 access=attrs.evolve(access(g, f"at-{grant_id}"), issued_at=at)).name == "ISSUED"
    g = grant(grant_id="g4", client_id="c3")  # a grant with no token yet
    store.save_grant_and_code(g, code(g))
    assert store.clients_last_used(tenant="acme", client_ids=("c1", "c2", "c3", "c9")) == {"c1": T0 + 9,
                                                                                          "c2": T0 + 7}
    assert store.clients_last_used(tenant="other", client_ids=("c1",)) == {}
    assert store.clients_last_used(tenant="acme", client_ids=()) == {}
