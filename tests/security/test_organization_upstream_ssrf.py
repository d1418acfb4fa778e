"""An organization's OAuth configuration is written by that organization's
admin, who must not reach the proxy's own network through it (blind SSRF:
discovery, token and userinfo calls, the console's check, to an address
of their choosing). Its requests go only to public addresses, or to the
networks the operator lists (server.organization_upstream_networks), to
the address that was checked, with the host's name kept for TLS."""

from __future__ import annotations

import ipaddress
import ssl

import anyio
import attrs
import pytest

from egress_world import ConnectProxy, TlsProvider
from mcp_oauth_proxy import config as config_mod
from mcp_oauth_proxy.admin.discovery_check import bounded_fetch, check_discovery
from mcp_oauth_proxy.core.effects import Fetch, run_sync
from mcp_oauth_proxy.core.errors import FetchFailed, UpstreamNotReady
from mcp_oauth_proxy.core.http import HttpRequest
from mcp_oauth_proxy.core.models import OAuthConfig
from mcp_oauth_proxy.core.upstream import token_request, userinfo_request
from mcp_oauth_proxy.upstream import egress as egress_mod
from mcp_oauth_proxy.upstream.egress import Egress, EgressError, egress_from
from mcp_oauth_proxy.upstream.http import AsyncFetcher, SyncFetcher
from mcp_oauth_proxy.upstream.providers import OidcDiscovery, PublicOnly

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


def _egress(ca: tuple[str, str, str], **kw: object) -> Egress:
    return Egress(ssl_context=ssl.create_default_context(cafile=ca[0]), **kw)  # type: ignore[arg-type]


def _get(url: str, public_only: str | None = "acme") -> HttpRequest:
    return HttpRequest("GET", url, (("accept", "application/json"),), public_only=public_only)


def _sync(egress: Egress, request: HttpRequest):
    return SyncFetcher(timeout=5, egress=egress)(request)


def _async(egress: Egress, request: HttpRequest, backend: str = "asyncio"):
    async def go():
        fetcher = AsyncFetcher(timeout=5, egress=egress)
        try:
            return await fetcher(request)
        finally:
            await fetcher.aclose()

    return anyio.run(go, backend=backend)


CARRIERS = {"sync": _sync, "asyncio": _async, "trio": lambda e, r: _async(e, r, "trio")}


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::ffff:127.0.0.1]"])
def test_an_organizations_request_to_our_own_network_is_refused_before_it_connects(
        ca, provider: TlsProvider, carrier: str, host: str) -> None:
    url = f"https://{host}:{provider.port}/.well-known/openid-configuration"
    with pytest.raises(FetchFailed):
        CARRIERS[carrier](_egress(ca), _get(url))
    assert provider.seen == [] and provider.server_names == []


@pytest.mark.parametrize("carrier", CARRIERS)
def test_the_operators_networks_are_reached_by_the_hosts_name(ca, provider: TlsProvider, carrier: str) -> None:
    answer = CARRIERS[carrier](_egress(ca, reachable=LOOPBACK), _get(provider.issuer + "/jwks"))
    assert answer.status == 200
    # Sent to the checked address, the name kept: Host header and TLS server name (its certificate's).
    assert provider.hosts == [f"localhost:{provider.port}"] and provider.server_names == ["localhost"]


def test_the_certificate_is_still_checked_for_the_hosts_name(ca, provider: TlsProvider) -> None:
    # A pinned request trusts the address no more than the name: without the CA it fails.
    with pytest.raises(FetchFailed):
        _sync(Egress(reachable=LOOPBACK), _get(provider.issuer + "/jwks"))
    assert provider.seen == []


def test_a_request_of_the_operators_own_configuration_goes_where_it_says(ca, provider: TlsProvider) -> None:
    assert _sync(_egress(ca), _get(provider.issuer + "/jwks", public_only=None)).status == 200


def test_a_host_answering_public_and_private_addresses_is_refused(ca, provider: TlsProvider,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    answers = [ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("127.0.0.1")]
    monkeypatch.setattr(egress_mod, "addresses_of", lambda host, port: answers)
    for carrier in ("sync", "asyncio"):
        with pytest.raises(FetchFailed):
            CARRIERS[carrier](_egress(ca), _get("https://idp.example.com/jwks"))
    # Refused for the second answer, before any connection to the first.
    assert [r.getMessage().rsplit(": ", 1)[1] for r in caplog.records] == ["Unreachable", "Unreachable"]


def test_through_the_proxy_the_proxy_is_asked_for_the_checked_address(ca, provider: TlsProvider) -> None:
    proxy = ConnectProxy()
    try:
        egress = _egress(ca, https_proxy=proxy.url, reachable=LOOPBACK)
        assert _sync(egress, _get(provider.issuer + "/jwks")).status == 200
        assert proxy.targets == [f"127.0.0.1:{provider.port}"]
        with pytest.raises(FetchFailed):
            _sync(_egress(ca, https_proxy=proxy.url), _get(provider.issuer + "/jwks"))
        assert len(proxy.targets) == 1  # the refused one never reached the proxy
    finally:
        proxy.close()


# -- every request of an organization's configuration is marked ---------------------------------


def _drive(source: PublicOnly, answer_with) -> object:
    sent: list[HttpRequest] = []

    def perform(effect: object) -> object:
        assert isinstance(effect, Fetch)
        sent.append(effect.request)
        return answer_with(effect.request)

    upstream = run_sync(source.resolve(), perform)
    return upstream, sent


def test_discovery_and_the_endpoints_it_finds_are_all_marked(ca, provider: TlsProvider) -> None:
    fetch = SyncFetcher(timeout=5, egress=_egress(ca, reachable=LOOPBACK))
    source = PublicOnly(OidcDiscovery(provider.issuer, "cid", "secret", scopes=("openid",)), "acme")
    upstream, sent = _drive(source, fetch)
    # Each marked with the organization, whose networks it may reach.
    assert [r.public_only for r in sent] == ["acme"]
    assert upstream.public_only == "acme" and upstream.token_endpoint == provider.issuer + "/token"
    assert token_request(upstream, {"grant_type": "authorization_code"}).public_only == "acme"
    assert userinfo_request(upstream, "at").public_only == "acme"


def test_a_refused_discovery_is_the_upstreams_failure(ca, provider: TlsProvider) -> None:
    fetch = SyncFetcher(timeout=5, egress=_egress(ca))
    source = PublicOnly(OidcDiscovery(provider.issuer, "cid", "secret", scopes=("openid",)), "acme")
    with pytest.raises(UpstreamNotReady):
        _drive(source, fetch)
    assert provider.seen == []


def test_the_database_serves_organizations_upstreams_marked() -> None:
    from mcp_oauth_proxy.core.models import Organization, Server
    from mcp_oauth_proxy.storage.memory import MemoryStore
    from mcp_oauth_proxy.tenants_db import DatabaseTenants
    from mcp_oauth_proxy.directory import Directory

    store = MemoryStore()
    store.create_organization(Organization("org", "Org", 0))
    store.create_oauth_config(OAuthConfig("org", "idp", "oauth2", "cid", "sec",
                                          authorization_endpoint="https://10.0.0.1/a",
                                          token_endpoint="https://10.0.0.1/t"))
    store.create_server(Server(slug="beta", organization="org", oauth_config="idp", issuer="https://beta.test",
                               resource="https://beta.test/mcp"))
    (entry,) = Directory(DatabaseTenants(store, [])).current.entries
    upstream = run_sync(entry.source.resolve(), lambda effect: None)
    assert upstream.public_only == "org" and token_request(upstream, {}).public_only == "org"
    assert entry.tenant.fetches_public_only == "org"  # its machine clients' and ID-JAG issuers' keys too


# -- the console's check --------------------------------------------------------------------------------


def test_the_consoles_check_of_an_internal_address_is_refused_unless_listed(ca, provider: TlsProvider) -> None:
    config = OAuthConfig("acme", "idp", "oidc", "cid", "secret", issuer=provider.issuer)
    refused = check_discovery(config, fetch=lambda request: bounded_fetch(request, egress=_egress(ca)))
    assert not refused.ok and provider.seen == []
    allowed = check_discovery(config, fetch=lambda request: bounded_fetch(
        request, egress=_egress(ca, reachable=LOOPBACK)))
    assert allowed.ok, allowed.summary


@pytest.mark.parametrize("carrier", CARRIERS)
def test_a_network_listed_for_one_organization_is_not_anothers(ca, provider: TlsProvider, carrier: str) -> None:
    # A review: the one list was every organization's, so one listed for
    # acme's identity provider let beta probe acme's backend and read back
    # what an internal JSON endpoint there answered.
    egress = _egress(ca, reachable_by=(("acme", LOOPBACK),))
    assert CARRIERS[carrier](egress, _get(provider.issuer + "/jwks", public_only="acme")).status == 200
    with pytest.raises(FetchFailed):
        CARRIERS[carrier](egress, _get(provider.issuer + "/jwks", public_only="beta"))
    assert len(provider.seen) == 1


# -- the setting -----------------------------------------------------------------------------------------


def test_the_networks_are_read_from_the_configuration_and_checked() -> None:
    tenant = {"slug": "a", "issuer": "https://a.example.com", "resource": "https://a.example.com/mcp",
              "upstream": {"kind": "github", "client_id": "x", "client_secret": "y"}}
    parsed = config_mod.parse({"server": {"organization_upstream_networks": ["10.20.0.0/16", "fd00::1"]},
                               "tenants": [tenant]})
    assert egress_from(None, None, {}, parsed.server.organization_upstream_networks).reachable == (
        ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("fd00::1/128"))
    with pytest.raises(config_mod.ConfigError, match="organization_upstream_networks"):
        config_mod.parse({"server": {"organization_upstream_networks": ["10.20.0.1/16"]}, "tenants": [tenant]})
    with pytest.raises(EgressError):
        egress_from(None, None, {}, ["intranet"])
    # Or a table by organization: each its own.
    parsed = config_mod.parse({"server": {"organization_upstream_networks": {"acme": ["10.20.0.0/16"], "beta": []}},
                               "tenants": [tenant]})
    egress = egress_from(None, None, {}, parsed.server.organization_upstream_networks)
    assert egress.networks_for("acme") == (ipaddress.ip_network("10.20.0.0/16"),)
    assert egress.networks_for("beta") == () and egress.networks_for("gamma") == ()
    with pytest.raises(config_mod.ConfigError, match=r"organization_upstream_networks\.acme"):
        config_mod.parse({"server": {"organization_upstream_networks": {"acme": ["intranet"]}}, "tenants": [tenant]})
    with pytest.raises(config_mod.ConfigError, match="organization_upstream_networks"):
        config_mod.parse({"server": {"organization_upstream_networks": "10.0.0.0/8"}, "tenants": [tenant]})
    assert attrs.fields(Egress).reachable.default == ()
