"""Every outbound client follows one egress decision (upstream/egress.py):
through the configured CONNECT proxy, trusting the configured CAs, with the
standard environment variables honoured and ``.netrc`` never read. Against
a real CONNECT proxy and an HTTPS provider whose certificate comes from a
CA made in the test, all on loopback."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Iterator

import anyio
import httpx
import pytest

from egress_world import ConnectProxy, TlsProvider
from mcp_oauth_proxy.admin.discovery_check import bounded_fetch, check_discovery
from mcp_oauth_proxy.core.effects import FetchClientMetadata, ResolveKeys
from mcp_oauth_proxy.core.errors import FetchFailed
from mcp_oauth_proxy.core.http import HttpRequest
from mcp_oauth_proxy.core.models import OAuthConfig
from mcp_oauth_proxy.mcp_sdk import IntrospectionTokenVerifier
from mcp_oauth_proxy.runtime import sync_performer
from mcp_oauth_proxy.storage.memory import MemoryStore
from mcp_oauth_proxy.upstream.client_metadata import DocumentFetcher
from mcp_oauth_proxy.upstream.egress import Egress, EgressError, bypasses, egress_from, trust
from mcp_oauth_proxy.upstream.http import AsyncFetcher, SyncFetcher
from mcp_oauth_proxy.upstream.key_sets import KeySets


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    server = ConnectProxy()
    yield server
    server.close()


def _discovery(provider: TlsProvider) -> HttpRequest:
    return HttpRequest("GET", provider.issuer + "/.well-known/openid-configuration", (("accept", "application/json"),))


def _token(provider: TlsProvider) -> HttpRequest:
    return HttpRequest("POST", provider.issuer + "/token", (("content-type", "application/x-www-form-urlencoded"),),
                       b"grant_type=authorization_code&code=c")


# -- the decision -------------------------------------------------------------


@pytest.mark.parametrize("host, no_proxy, bypassed", [
    ("idp.example.com", ("example.com",), True),
    ("example.com", ("example.com",), True),
    ("example.com", (".example.com",), True),
    ("badexample.com", ("example.com",), False),
    ("idp.example.org", ("example.com",), False),
    ("10.1.2.3", ("10.0.0.0/8",), True),
    ("10.1.2.3", ("10.1.2.3",), True),
    ("11.1.2.3", ("10.0.0.0/8",), False),
    ("[::1]", ("::1",), True),
    ("anything", ("*",), True),
    ("LOCALHOST.", ("localhost",), True),
    ("idp.example.com", (), False),
])
def test_no_proxy_follows_curls_rules(host: str, no_proxy: tuple[str, ...], bypassed: bool) -> None:
    assert bypasses(host, no_proxy) is bypassed


def test_the_configuration_wins_over_the_environment_and_no_proxy_applies_to_both() -> None:
    env = {"HTTPS_PROXY": "http://env-proxy:3128", "NO_PROXY": "internal.example"}
    chosen = egress_from("http://configured:8080", None, env)
    assert chosen.proxy_for("https://idp.example/x") == "http://configured:8080"
    assert chosen.proxy_for("http://idp.example/x") == "http://configured:8080"
    assert chosen.proxy_for("https://kc.internal.example/x") is None
    from_env = egress_from(None, None, env)
    assert from_env.proxy_for("https://idp.example/x") == "http://env-proxy:3128"
    assert from_env.proxy_for("http://idp.example/x") is None  # HTTPS_PROXY is for https URLs
    assert egress_from(None, None, {"https_proxy": "proxy:3128", "HTTPS_PROXY": "http://other:1"}).proxy_for(
        "https://idp.example/") == "http://proxy:3128"  # lower case first, a scheme-less value as curl reads it
    assert egress_from(None, None, {}).proxy_for("https://idp.example/") is None


@pytest.mark.parametrize("setting", ["socks5://proxy:1080", "https://proxy:443", "http://proxy:3128/path",
                                     "http://:3128", "http://proxy:99999"])
def test_a_proxy_other_than_plain_http_is_refused_naming_its_setting(setting: str) -> None:
    with pytest.raises(EgressError, match="server.outbound_proxy: must be an http:// proxy URL"):
        egress_from(setting, None, {})
    with pytest.raises(EgressError, match="HTTPS_PROXY: must be an http:// proxy URL"):
        egress_from(None, None, {"HTTPS_PROXY": setting})


def test_an_unreadable_ca_bundle_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate")
    for path in (str(tmp_path / "missing.pem"), str(tmp_path / "junk.pem")):
        with pytest.raises(EgressError, match="server.ca_bundle"):
            trust(path, {})
        with pytest.raises(EgressError, match="SSL_CERT_FILE"):
            trust(None, {"SSL_CERT_FILE": path})


# -- the upstream carriers: discovery and token calls ----------------------------


def test_sync_upstream_calls_go_through_the_proxy_and_trust_the_ca_bundle(
        ca: tuple[str, str, str], provider: TlsProvider, proxy: ConnectProxy) -> None:
    fetch = SyncFetcher(timeout=5, egress=egress_from(proxy.url, ca[0], {}))
    assert fetch(_discovery(provider)).status == 200
    assert fetch(_token(provider)).status == 200
    fetch.close()
    assert proxy.targets and set(proxy.targets) == {f"localhost:{provider.port}"}
    assert [s[:2] for s in provider.seen] == [("GET", "/.well-known/openid-configuration"), ("POST", "/token")]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_upstream_calls_go_through_the_proxy_and_trust_the_ca_bundle(
        ca: tuple[str, str, str], provider: TlsProvider, proxy: ConnectProxy, backend: str) -> None:
    async def main() -> None:
        fetch = AsyncFetcher(timeout=5, egress=egress_from(proxy.url, ca[0], {}))
        assert (await fetch(_discovery(provider))).status == 200
        assert (await fetch(_token(provider))).status == 200
        await fetch.aclose()

    anyio.run(main, backend=backend)
    assert set(proxy.targets) == {f"localhost:{provider.port}"}


def test_without_the_ca_the_provider_is_not_trusted(provider: TlsProvider, proxy: ConnectProxy) -> None:
    fetch = SyncFetcher(timeout=5, egress=egress_from(proxy.url, None, {}))
    with pytest.raises(FetchFailed):
        fetch(_discovery(provider))
    fetch.close()
    assert proxy.targets  # it went the configured way, and was refused at TLS
    assert provider.seen == []


def test_a_proxy_that_refuses_the_tunnel_is_a_fetch_failure(ca: tuple[str, str, str], provider: TlsProvider,
                                                            proxy: ConnectProxy) -> None:
    proxy.refuse = True
    fetch = SyncFetcher(timeout=5, egress=egress_from(proxy.url, ca[0], {}))
    with pytest.raises(FetchFailed):
        fetch(_discovery(provider))
    assert provider.seen == []


def test_the_environment_is_honoured(ca: tuple[str, str, str], provider: TlsProvider, proxy: ConnectProxy) -> None:
    fetch = SyncFetcher(timeout=5, egress=egress_from(None, None, {"HTTPS_PROXY": proxy.url, "SSL_CERT_FILE": ca[0]}))
    assert fetch(_discovery(provider)).status == 200
    assert proxy.targets == [f"localhost:{provider.port}"]
    bypassing = SyncFetcher(timeout=5, egress=egress_from(
        None, None, {"HTTPS_PROXY": proxy.url, "NO_PROXY": "localhost", "SSL_CERT_FILE": ca[0]}))
    assert bypassing(_discovery(provider)).status == 200
    assert len(proxy.targets) == 1  # straight to the provider this time
    # SSL_CERT_FILE replaces the default CAs: the test's CA without it is not trusted.
    with pytest.raises(FetchFailed):
        SyncFetcher(timeout=5, egress=egress_from(None, None, {"HTTPS_PROXY": proxy.url}))(_discovery(provider))
    fetch.close()
    bypassing.close()


def test_netrc_is_never_read(ca: tuple[str, str, str], provider: TlsProvider, proxy: ConnectProxy,
                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine localhost login alice password secret\nmachine 127.0.0.1 login alice password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".netrc").write_text(netrc.read_text())
    (tmp_path / ".netrc").chmod(0o600)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("SSL_CERT_FILE", ca[0])
    import os

    egress = egress_from(None, None, os.environ)
    SyncFetcher(timeout=5, egress=egress)(_discovery(provider))
    bounded_fetch(_discovery(provider), egress=egress)
    verifier = IntrospectionTokenVerifier(provider.issuer + "/introspect", "rs", "rs-secret", "https://mcp.example/")
    assert anyio.run(verifier.verify_token, "mcp_at_x") is None
    authorizations = [s[2] for s in provider.seen]
    assert authorizations[:2] == [None, None]
    assert authorizations[2] is not None and "alice" not in authorizations[2]  # the verifier's own credential
    assert len(proxy.targets) == 3
    assert not any("proxy-authorization" in head.lower() for head in proxy.heads)


# -- the other outbound clients ---------------------------------------------------


def test_the_consoles_check_goes_through_the_proxy(ca: tuple[str, str, str], provider: TlsProvider,
                                                   proxy: ConnectProxy) -> None:
    config = OAuthConfig("acme", "idp", "oidc", "cid", "secret", issuer=provider.issuer)
    # An organization's configuration: the proxy is asked for the address checked (on loopback: listed).
    egress = egress_from(proxy.url, ca[0], {}, ["127.0.0.1"])
    found = check_discovery(config, fetch=lambda request: bounded_fetch(request, egress=egress))
    assert found.ok, found.summary
    assert proxy.targets == [f"127.0.0.1:{provider.port}"]
    assert not check_discovery(config, fetch=lambda request: bounded_fetch(
        request, egress=egress_from(proxy.url, None, {}, ["127.0.0.1"]))).ok


def test_introspection_goes_through_the_proxy(ca: tuple[str, str, str], provider: TlsProvider,
                                              proxy: ConnectProxy) -> None:
    verifier = IntrospectionTokenVerifier(provider.issuer + "/introspect", "rs", "s", "https://mcp.example/",
                                          egress=egress_from(proxy.url, ca[0], {}))
    assert anyio.run(verifier.verify_token, "mcp_at_x") is None  # inactive, as the provider says
    assert proxy.targets == [f"localhost:{provider.port}"]


def test_key_sets_are_fetched_through_the_proxy(ca: tuple[str, str, str], provider: TlsProvider,
                                                proxy: ConnectProxy) -> None:
    # JWKS fetches (machine clients, ID-JAG issuers) are Fetch effects: the upstream carrier's.
    key_sets = KeySets()
    perform = sync_performer(MemoryStore(), SyncFetcher(timeout=5, egress=egress_from(proxy.url, ca[0], {})),
                             resolve_keys=key_sets.resolve)
    assert perform(ResolveKeys(provider.issuer, discover=True)) == []
    assert [s[1] for s in provider.seen] == ["/.well-known/openid-configuration", "/jwks"]
    assert set(proxy.targets) == {f"localhost:{provider.port}"}


def test_metadata_documents_tunnel_to_the_checked_address(ca: tuple[str, str, str], provider: TlsProvider,
                                                          proxy: ConnectProxy) -> None:
    egress = Egress(https_proxy=proxy.url, ssl_context=ssl.create_default_context(cafile=ca[0]))
    fetcher = DocumentFetcher(egress=egress)
    answer = fetcher.fetch(FetchClientMetadata(provider.issuer + "/client.json", allow_loopback=True))
    assert answer.status == 200
    # The proxy was asked for the address we checked, not the name (which it would resolve again).
    assert proxy.targets == [f"127.0.0.1:{provider.port}"]


def test_metadata_documents_keep_their_address_checks_behind_a_proxy(ca: tuple[str, str, str],
                                                                     provider: TlsProvider,
                                                                     proxy: ConnectProxy) -> None:
    fetcher = DocumentFetcher(egress=Egress(https_proxy=proxy.url,
                                            ssl_context=ssl.create_default_context(cafile=ca[0])))
    for url in (provider.issuer + "/client.json", "https://10.0.0.1/client.json"):
        with pytest.raises(FetchFailed, match="private or reserved"):
            fetcher.fetch(FetchClientMetadata(url, allow_loopback=False))
    assert proxy.targets == []
    proxy.refuse = True
    with pytest.raises(FetchFailed, match="could not be reached"):
        DocumentFetcher(egress=Egress(https_proxy=proxy.url, ssl_context=ssl.create_default_context(cafile=ca[0]))
                        ).fetch(FetchClientMetadata(provider.issuer + "/client.json", allow_loopback=True))
    assert provider.seen == []


def test_a_document_fetch_without_the_ca_fails_through_the_proxy(provider: TlsProvider, proxy: ConnectProxy) -> None:
    with pytest.raises(FetchFailed, match="TLS"):
        DocumentFetcher(egress=Egress(https_proxy=proxy.url)).fetch(
            FetchClientMetadata(provider.issuer + "/client.json", allow_loopback=True))
    assert proxy.targets == [f"127.0.0.1:{provider.port}"]


# -- the served app -----------------------------------------------------------------


@pytest.mark.parametrize("trusted", [True, False])
def test_the_served_app_discovers_its_upstream_through_the_configured_proxy(
        ca: tuple[str, str, str], provider: TlsProvider, proxy: ConnectProxy, trusted: bool) -> None:
    from mcp_oauth_proxy import config as config_mod
    from mcp_oauth_proxy.app import build_app

    server = {"outbound_proxy": proxy.url, **({"ca_bundle": ca[0]} if trusted else {})}
    config = config_mod.parse({"server": server, "tenants": [{
        "slug": "t", "issuer": "https://mcp.example", "resource": "https://mcp.example/mcp",
        "upstream": {"kind": "oidc", "issuer": provider.issuer, "client_id": "c", "client_secret": "s"}}]})
    app = build_app(config, environ={})

    async def main() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://mcp.example") as client:
            return (await client.get("/oauth/userinfo")).status_code

    # userinfo resolves the upstream before anything else: 401 (no token) once discovered, else 503.
    assert anyio.run(main) == (401 if trusted else 503)
    assert proxy.targets[:1] == [f"localhost:{provider.port}"]
    assert [s[1] for s in provider.seen] == (["/.well-known/openid-configuration"] if trusted else [])


def test_review_fixes_http_proxy_lower_case_only_and_no_password_in_a_repr() -> None:
    """curl reads http_proxy in lower case only: under CGI a request's Proxy
    header becomes HTTP_PROXY ("httpoxy"). A proxy URL's password shows in
    no repr of the settings."""
    from mcp_oauth_proxy.config import ServerConfig
    from mcp_oauth_proxy.upstream.egress import egress_from

    assert egress_from(None, None, {"HTTP_PROXY": "http://attacker.example:80"}).http_proxy is None
    assert egress_from(None, None, {"http_proxy": "http://proxy.example:3128"}).http_proxy is not None
    settings = egress_from("http://u:SuperSecretPW@proxy.example:3128", None, {})
    assert "SuperSecretPW" not in repr(settings)
    assert "SuperSecretPW" not in repr(ServerConfig(outbound_proxy="http://u:SuperSecretPW@proxy.example:3128"))



def test_an_https_backend_under_a_private_ca_is_trusted_through_ca_bundle(tmp_path: Path) -> None:
    """The forwarder checks an https backend's certificate against the same
    CAs as every outbound client: refused without server.ca_bundle (a 502),
    reached with it."""
    import hashlib
    import http.server
    import ssl
    import threading

    import anyio
    import httpx
    from https_server import self_signed
    from storage.storage_records import T0, access, code, grant

    from mcp_oauth_proxy import config as config_mod
    from mcp_oauth_proxy.app import build_app

    cert, key = self_signed(tmp_path)

    class Backend(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = "mcp_at_backend-ca-test"

    def status(ca_bundle: str | None) -> int:
        data: dict = {"server": {"ca_bundle": ca_bundle} if ca_bundle else {}, "tenants": [{
            "slug": "acme", "issuer": "https://acme.example.com", "resource": "https://acme.example.com/mcp",
            "backend": f"https://127.0.0.1:{server.server_address[1]}/mcp",
            "upstream": {"kind": "github", "client_id": "c", "client_secret": "s"}}]}
        app = build_app(config_mod.parse(data))
        g = grant()
        app.site.store.save_grant_and_code(g, code(g))
        assert app.site.store.redeem_code(tenant="acme", code_hash=g.code_hash, now=T0, refresh=None, keep_client=False,
                                          access=access(g, hashlib.sha256(token.encode()).hexdigest())).name == "ISSUED"

        async def call() -> int:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=10) as http:
                answer = await http.post("https://acme.example.com/mcp", json={},
                                         headers={"authorization": f"Bearer {token}"})
                return answer.status_code

        return anyio.run(call)

    try:
        assert status(None) == 502  # the private CA is not trusted by default
        assert status(cert) == 200
    finally:
        server.shutdown()
