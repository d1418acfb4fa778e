"""SSRF through Client ID Metadata Documents: IPv6 forms that carry an
IPv4 address (NAT64, 6to4, Teredo, IPv4-compatible and -translated) must
not smuggle a private or loopback address past the check, and a document
fetched under one tenant's policy must not be accepted from the cache under
a stricter one."""

from __future__ import annotations

import ipaddress

import pytest

from https_server import serve_document
from support import Harness, tenant
from mcp_oauth_proxy.core.effects import FetchClientMetadata, run_sync
from mcp_oauth_proxy.core.errors import FetchFailed
from mcp_oauth_proxy.runtime import sync_performer
from mcp_oauth_proxy.upstream.client_metadata import DocumentFetcher, address_allowed

# (address, what Python's ipaddress says of is_global (None: it differs
# between Python versions), allowed with loopback refused, with it allowed).
# The True column is why the rule cannot rest on is_global alone.
EMBEDDED = [
    ("64:ff9b::7f00:1", True, False, False),  # NAT64 (RFC 6052) of 127.0.0.1: the translator's loopback
    ("64:ff9b::a00:1", True, False, False),  # NAT64 of 10.0.0.1
    ("64:ff9b::a9fe:a9fe", True, False, False),  # NAT64 of 169.254.169.254 (cloud metadata)
    ("64:ff9b::808:808", True, True, True),  # NAT64 of 8.8.8.8: how DNS64 networks reach IPv4 hosts
    ("64:ff9b:1::7f00:1", None, False, False),  # local-use NAT64 (RFC 8215): where the IPv4 sits is unknown
    ("64:ff9b:1::808:808", None, False, False),
    ("2002:7f00:1::", True, False, False),  # 6to4 (RFC 3056) of 127.0.0.1
    ("2002:a00:1::1", True, False, False),  # 6to4 of 10.0.0.1
    ("2002:808:808::1", True, True, True),  # 6to4 of 8.8.8.8
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", False, False, False),  # Teredo (RFC 4380), client 127.0.0.1
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", False, False, False),  # Teredo, client 8.8.8.8: never a server
    ("::127.0.0.1", True, False, False),  # IPv4-compatible (RFC 4291 §2.5.5.1, deprecated)
    ("::8.8.8.8", True, False, False),
    ("::ffff:0:7f00:1", True, False, False),  # IPv4-translated (RFC 2765)
    ("::ffff:127.0.0.1", False, False, True),  # IPv4-mapped: this host's own loopback
    ("::ffff:10.0.0.1", False, False, False),
    ("::ffff:8.8.8.8", True, True, True),
    ("::1", False, False, True),
    ("2606:4700::1111", True, True, True),
    ("100::1", False, False, False),  # discard-only (RFC 6666)
    ("2001:db8::1", False, False, False),  # documentation
]


@pytest.mark.parametrize("address, stdlib_global, strict, loopback_ok", EMBEDDED)
def test_ipv6_forms_carrying_ipv4_cannot_smuggle_a_private_address(address, stdlib_global, strict, loopback_ok):
    ip = ipaddress.ip_address(address)
    if stdlib_global is not None:
        assert ip.is_global is stdlib_global
    assert address_allowed(ip, allow_loopback=False) is strict
    assert address_allowed(ip, allow_loopback=True) is loopback_ok


@pytest.mark.parametrize("address", ["64:ff9b::7f00:1", "2002:7f00:1::", "::127.0.0.1", "64:ff9b:1::7f00:1",
                                     "::ffff:0:7f00:1"])
def test_embedded_loopback_is_refused_before_any_connection(address):
    # Even where the tenant allows loopback: these are not this host's loopback.
    fetcher = DocumentFetcher()
    with pytest.raises(FetchFailed, match="private or reserved"):
        fetcher.fetch(FetchClientMetadata(f"https://[{address}]:1/client.json", allow_loopback=True))


def _harness(fetcher: DocumentFetcher, **kw) -> Harness:
    h = Harness(tenant=tenant(**kw))
    h.driver = lambda flow: run_sync(flow, sync_performer(h.store, h.idp, fetch_document=fetcher.fetch))
    return h


def test_a_document_cached_for_a_loopback_tenant_is_not_accepted_by_a_strict_one(doc_server):
    # One site, one fetcher, one cache: the development tenant allows
    # loopback, the production tenant beside it does not.
    fetcher = DocumentFetcher(verify=doc_server.trust())
    dev = _harness(fetcher, slug="dev", client_metadata_allow_loopback=True)
    prod = _harness(fetcher, slug="prod")
    url = serve_document(doc_server, cache_control="max-age=3600")
    assert dev.request("GET", dev.authorize_url(url)).status == 200
    page = prod.request("GET", prod.authorize_url(url))
    assert page.status == 400 and "private or reserved" in page.body.decode()
    assert doc_server.hits["/client.json"] == 1  # refused by the address check, not fetched again
