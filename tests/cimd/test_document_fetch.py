"""The SSRF-guarded fetch of Client ID Metadata Documents against a real
HTTPS server on loopback (the tenant's loopback allowance on), and the
whole flow with such a client through the core."""

from __future__ import annotations

import ipaddress
import json

import anyio
import pytest

from https_server import serve_document
from support import Harness, tenant
from mcp_oauth_proxy.core.cimd import MIN_CACHE
from mcp_oauth_proxy.core.effects import FetchClientMetadata, run_sync
from mcp_oauth_proxy.core.errors import FetchFailed
from mcp_oauth_proxy.runtime import sync_performer
from mcp_oauth_proxy.upstream.client_metadata import DocumentFetcher, address_allowed


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_fetches_a_document_over_verified_tls_and_caches_it_per_cache_control(doc_server):
    clock = Clock()
    fetcher = DocumentFetcher(verify=doc_server.trust(), clock=clock)
    url = serve_document(doc_server)
    effect = FetchClientMetadata(url, allow_loopback=True)
    first = fetcher.fetch(effect)
    assert first.status == 200 and json.loads(first.body)["client_id"] == url
    fetcher.fetch(effect)
    assert doc_server.hits["/client.json"] == 1  # served from the cache
    clock.now += 301
    fetcher.fetch(effect)
    assert doc_server.hits["/client.json"] == 2  # expired after max-age


def test_no_store_documents_are_kept_only_the_minimum(doc_server):
    clock = Clock()
    fetcher = DocumentFetcher(verify=doc_server.trust(), clock=clock)
    effect = FetchClientMetadata(serve_document(doc_server, cache_control="no-store"), allow_loopback=True)
    fetcher.fetch(effect)
    clock.now += MIN_CACHE - 1
    fetcher.fetch(effect)
    assert doc_server.hits["/client.json"] == 1
    clock.now += 2
    fetcher.fetch(effect)
    assert doc_server.hits["/client.json"] == 2


def test_loopback_is_refused_unless_the_tenant_allows_it(doc_server):
    fetcher = DocumentFetcher(verify=doc_server.trust())
    with pytest.raises(FetchFailed, match="private or reserved"):
        fetcher.fetch(FetchClientMetadata(serve_document(doc_server), allow_loopback=False))
    assert doc_server.hits == {}  # refused before connecting


@pytest.mark.parametrize(
    "host",
    ["10.0.0.1", "192.168.1.10", "172.16.5.4", "169.254.169.254", "100.64.0.1", "0.0.0.0", "[fd00::1]",
     "[fe80::1]", "[::ffff:10.0.0.1]", "224.0.0.1", "240.0.0.1"],
)
def test_private_and_reserved_addresses_are_refused_before_any_connection(host):
    # Even with loopback allowed: these ranges are never fetched.
    with pytest.raises(FetchFailed, match="private or reserved"):
        DocumentFetcher().fetch(FetchClientMetadata(f"https://{host}/client.json", allow_loopback=True))


@pytest.mark.parametrize("address, loopback, allowed", [
    ("8.8.8.8", False, True), ("2606:4700::1111", False, True), ("127.0.0.1", False, False),
    ("127.0.0.1", True, True), ("::1", True, True), ("::ffff:127.0.0.1", False, False), ("10.1.2.3", True, False),
])
def test_address_rules(address, loopback, allowed):
    assert address_allowed(ipaddress.ip_address(address), loopback) is allowed


def test_an_untrusted_certificate_is_refused(doc_server):
    with pytest.raises(FetchFailed, match="TLS"):
        DocumentFetcher().fetch(FetchClientMetadata(serve_document(doc_server), allow_loopback=True))


def test_a_certificate_for_another_name_is_refused(doc_server):
    # The certificate names localhost and 127.0.0.1, not 127.0.0.2.
    url = serve_document(doc_server).replace("localhost", "127.0.0.2")
    with pytest.raises(FetchFailed):
        DocumentFetcher(verify=doc_server.trust()).fetch(FetchClientMetadata(url, allow_loopback=True))


def test_redirects_are_not_followed(doc_server):
    doc_server.routes["/moved.json"] = (302, {"location": doc_server.url("/client.json")}, b"")
    serve_document(doc_server)
    with pytest.raises(FetchFailed, match="redirects are not followed"):
        DocumentFetcher(verify=doc_server.trust()).fetch(
            FetchClientMetadata(doc_server.url("/moved.json"), allow_loopback=True))
    assert "/client.json" not in doc_server.hits


def test_oversized_documents_are_cut_off(doc_server):
    doc_server.routes["/big.json"] = (200, {"content-type": "application/json"}, b" " * 20000)
    with pytest.raises(FetchFailed, match="larger than"):
        DocumentFetcher(verify=doc_server.trust()).fetch(
            FetchClientMetadata(doc_server.url("/big.json"), allow_loopback=True))


def test_unresolvable_host_is_refused():
    with pytest.raises(FetchFailed, match="does not resolve"):
        DocumentFetcher().fetch(FetchClientMetadata("https://no-such-host.invalid/c.json", allow_loopback=True))


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_fetch_behaves_the_same(doc_server, backend):
    fetcher = DocumentFetcher(verify=doc_server.trust())
    url = serve_document(doc_server)

    async def main():
        answer = await fetcher.fetch_async(FetchClientMetadata(url, allow_loopback=True))
        assert answer.status == 200
        with pytest.raises(FetchFailed, match="private or reserved"):
            await fetcher.fetch_async(FetchClientMetadata("https://10.0.0.1/c.json", allow_loopback=True))

    anyio.run(main, backend=backend)
    assert doc_server.hits["/client.json"] == 1


def test_a_document_client_completes_the_flow_with_the_real_fetcher(doc_server):
    fetcher = DocumentFetcher(verify=doc_server.trust())
    h = Harness(tenant=tenant(client_metadata_allow_loopback=True))
    h.driver = lambda flow: run_sync(flow, sync_performer(h.store, h.idp, fetch_document=fetcher.fetch))
    url = serve_document(doc_server)
    page = h.request("GET", h.authorize_url(url))
    assert page.status == 200 and f"localhost:{doc_server.port}" in page.body.decode()
    params = h.login(url)
    tokens = h.redeem(url, params["code"]).json()
    assert h.guard(tokens["access_token"]).client_id == url


def test_a_document_with_the_wrong_client_id_is_refused_through_the_flow(doc_server):
    fetcher = DocumentFetcher(verify=doc_server.trust())
    h = Harness(tenant=tenant(client_metadata_allow_loopback=True))
    h.driver = lambda flow: run_sync(flow, sync_performer(h.store, h.idp, fetch_document=fetcher.fetch))
    url = serve_document(doc_server, client_id="https://elsewhere.example/client.json")
    page = h.request("GET", h.authorize_url(url))
    assert page.status == 400 and "client_id is not its URL" in page.body.decode()


def test_private_address_refused_through_the_flow_when_loopback_is_not_allowed(doc_server):
    fetcher = DocumentFetcher(verify=doc_server.trust())
    h = Harness()
    h.driver = lambda flow: run_sync(flow, sync_performer(h.store, h.idp, fetch_document=fetcher.fetch))
    page = h.request("GET", h.authorize_url(serve_document(doc_server)))
    assert page.status == 400 and "private or reserved" in page.body.decode()
    assert doc_server.hits == {}


def test_a_document_client_revokes_its_tokens_without_a_fetch_and_cannot_use_a_secret(doc_server):
    fetcher = DocumentFetcher(verify=doc_server.trust())
    asked = []

    def fetch(effect):
        asked.append(effect)
        return fetcher.fetch(effect)

    h = Harness(tenant=tenant(client_metadata_allow_loopback=True))
    h.driver = lambda flow: run_sync(flow, sync_performer(h.store, h.idp, fetch_document=fetch))
    url = serve_document(doc_server)
    tokens = h.redeem(url, h.login(url)["code"]).json()
    asked.clear()
    # RFC 7009 §2.1: a public client is known by its client_id alone.
    assert h.request("POST", f"{h.tenant.issuer}/oauth/revoke",
                     form={"token": tokens["refresh_token"], "client_id": url}).status == 200
    # A document has no secret: one presented is refused before any fetch.
    for endpoint in ("token", "introspect", "revoke"):
        refused = h.request("POST", f"{h.tenant.issuer}/oauth/{endpoint}",
                            form={"token": tokens["access_token"], "client_id": url, "client_secret": "x",
                                  "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
        assert refused.status == 401 and refused.json()["error"] == "invalid_client"
    assert asked == []
    assert h.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                    "client_id": url}).json()["error"] == "invalid_grant"  # the revocation held
