"""Identity and origin headers a client spells with underscores: a WSGI
server files ``X_MCP_User`` and ``X-MCP-User`` under one ``HTTP_X_MCP_USER``
key, the client's joined ahead of ours. The forwarder in-process, in front
of a real WSGI backend process (wsgiref) that reports the environ it saw;
and a real ``serve`` process, whose server must not believe a client's
address claims either."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote

import anyio
import httpx
import pytest
from forward_servers import DEADLINE, GRACE, TOKEN_HEADER, as_guarded, start, upstream  # noqa: F401 (fixture)
from local_idp import LocalIdP
from processes import free_port, stop_process, wait_until
from proxy_apps import site
from served import LOOPS, seed_access_token, serve

from mcp_oauth_proxy.adapters.forward import Backend, Forwarder
from mcp_oauth_proxy.adapters.forward_headers import identity_value, to_backend, to_client


@pytest.fixture(scope="module")
def wsgi_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("wsgi-backend") / "wsgi.log"
    proc = start([sys.executable, str(Path(__file__).with_name("wsgi_backend.py")), str(port)], log)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/", trust_env=False, timeout=2).status_code == 200,
                   DEADLINE, "the WSGI backend", proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc, GRACE)


# Identity and origin headers in the spellings a WSGI server files under the
# same HTTP_ key as ours: the client's would be joined to ours, ahead of them.
SPOOFED = [
    ("X_MCP_User", "admin"), ("X_MCP_Scopes", "admin mcp x"), ("x_mcp_client_id", "evil"), ("X_Mcp_Other", "1"),
    (TOKEN_HEADER.replace("-", "_"), "forged"), ("X_Forwarded_For", "6.6.6.6"), ("X_Forwarded_Host", "evil.test"),
    ("X_Forwarded_Proto", "https"), ("X_Real_IP", "6.6.6.6"), ("True_Client_IP", "6.6.6.6"),
    ("Proxy_Authorization", "Basic eA=="), ("Keep_Alive", "timeout=5"), ("Connection", "x_private"),
    ("X-Private", "hop"), ("X_Private", "hop"),
    # re-routing and re-method headers some backends obey, and more address claims
    ("X_Original_URL", "/admin"), ("X-Rewrite-URL", "/admin"), ("X-HTTP-Method-Override", "PUT"),
    ("X_Method_Override", "PUT"), ("Client-IP", "6.6.6.6"), ("Via", "1.1 evil"), ("X-Original-Forwarded-For", "6.6.6.6"),
    ("X-Envoy-Original-Path", "/admin"), ("X_Original_Method", "DELETE"), ("X-Original-Path", "/admin"),
    ("X-Request-URI", "/admin"), ("Forwarded-For", "6.6.6.6"), ("X_Forwarded", "for=6.6.6.6"),
    ("X-Custom-IP-Authorization", "127.0.0.1"),
    # who signed in, as authenticating proxies tell their backends
    ("Remote-User", "admin"), ("X_Remote_User", "admin"), ("X-User", "admin"), ("X-Auth-User", "admin"),
    ("X-Authenticated-User", "admin"), ("X-Auth-Request-User", "admin"), ("X-Auth-Request-Email", "a@evil.test"),
    ("X-Forwarded-User", "admin"), ("X_Forwarded_Email", "a@evil.test"), ("X-Webauth-User", "admin"),
    ("X-Authenticated-Userid", "admin"), ("X-Consumer-Username", "admin"), ("X-Ms-Client-Principal-Name", "admin"),
    ("X-Amzn-Oidc-Identity", "admin"), ("OIDC_CLAIM_sub", "admin"), ("X-Goog-Authenticated-User-Email", "a@evil.test"),
    ("Cf-Access-Authenticated-User-Email", "a@evil.test"), ("X-Auth-Request-Groups", "admins"),
    ("X-Id-Token", "e30.e30."), ("X-Forwarded-Access-Token", "t"), ("X-Ssl-Client-S-Dn", "CN=admin"),
    ("X-Client-Cert", "MII"), ("X-Original-Host", "evil.test"), ("X-Script-Name", "/admin"),
    ("Remote-Groups", "admins"), ("Remote-Email", "a@evil.test"), ("X-Webauth-Email", "a@evil.test"),
    ("X-Pomerium-Claim-Email", "a@evil.test"), ("Tailscale-User-Login", "admin"), ("X-Authentik-Username", "admin"),
    ("X-Vouch-User", "admin"), ("X-Credential-Username", "admin"), ("X-Proxy-User", "admin"), ("Auth-User", "admin"),
    ("X-Auth-Email", "a@evil.test"), ("X-Email", "a@evil.test"), ("X-ARR-ClientCert", "MII"),
    # a third review: Kubernetes impersonation, API gateways' identities, platforms' client addresses, routes
    ("Impersonate-User", "admin"), ("Impersonate-Group", "system:masters"), ("X-Endpoint-Api-Userinfo", "e30"),
    ("X-Apigateway-Api-Userinfo", "e30"), ("X-Jwt-Assertion", "e30.e30."), ("X-Middleware-Subrequest", "middleware"),
    ("X-Invoke-Path", "/admin"), ("Fly-Client-IP", "6.6.6.6"), ("X-Envoy-External-Address", "6.6.6.6"),
    ("X-Appengine-User-Ip", "6.6.6.6"), ("X-Azure-ClientIP", "6.6.6.6"), ("X-Azure-SocketIP", "6.6.6.6"),
    ("X-Vercel-Forwarded-For", "6.6.6.6"),
]


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
@pytest.mark.parametrize("behind_proxy", [False, True])
def test_underscored_identity_headers_never_reach_a_wsgi_backend(
        upstream: LocalIdP, wsgi_backend: str, loop: str, behind_proxy: bool) -> None:
    async def token() -> str:
        return "upstream-token-1"

    async def main() -> dict[str, str]:
        trusted = ["127.0.0.0/8"] if behind_proxy else []
        forwarder = Forwarder(site(upstream, trusted_proxies=trusted),
                              {"acme": Backend(f"{wsgi_backend}/mcp", "/mcp", TOKEN_HEADER)})
        transport = httpx.ASGITransport(app=as_guarded(forwarder, token), client=("127.0.0.5", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://acme.test") as http:
            answer = await http.get("/mcp", headers=SPOOFED)
        await forwarder.aclose()
        assert answer.status_code == 200, answer.text
        return answer.json()

    environ = anyio.run(main, backend=loop)
    # Ours alone, each once.
    assert environ["HTTP_X_MCP_USER"] == "user-42"
    assert environ["HTTP_X_MCP_SCOPES"] == "mcp extra"
    assert environ["HTTP_X_MCP_CLIENT_ID"] == "client-1"
    assert environ["HTTP_X_UPSTREAM_TOKEN"] == "upstream-token-1"
    assert environ["HTTP_X_FORWARDED_FOR"] == "127.0.0.5"
    assert environ["HTTP_X_FORWARDED_HOST"] == "acme.test"
    assert environ["HTTP_X_FORWARDED_PROTO"] == "http"
    for gone in ("HTTP_X_MCP_OTHER", "HTTP_PROXY_AUTHORIZATION", "HTTP_KEEP_ALIVE", "HTTP_X_PRIVATE",
                 "HTTP_X_ORIGINAL_URL", "HTTP_X_REWRITE_URL", "HTTP_X_HTTP_METHOD_OVERRIDE", "HTTP_X_METHOD_OVERRIDE",
                 "HTTP_X_ENVOY_ORIGINAL_PATH", "HTTP_X_ORIGINAL_METHOD", "HTTP_X_ORIGINAL_PATH", "HTTP_X_REQUEST_URI",
                 "HTTP_REMOTE_USER", "HTTP_X_REMOTE_USER", "HTTP_X_USER", "HTTP_X_AUTH_USER",
                 "HTTP_X_AUTHENTICATED_USER", "HTTP_X_AUTH_REQUEST_USER", "HTTP_X_AUTH_REQUEST_EMAIL",
                 "HTTP_X_FORWARDED_USER", "HTTP_X_FORWARDED_EMAIL", "HTTP_X_WEBAUTH_USER",
                 "HTTP_X_AUTHENTICATED_USERID", "HTTP_X_CONSUMER_USERNAME", "HTTP_X_MS_CLIENT_PRINCIPAL_NAME",
                 "HTTP_X_AMZN_OIDC_IDENTITY", "HTTP_OIDC_CLAIM_SUB", "HTTP_X_GOOG_AUTHENTICATED_USER_EMAIL",
                 "HTTP_CF_ACCESS_AUTHENTICATED_USER_EMAIL", "HTTP_X_AUTH_REQUEST_GROUPS", "HTTP_X_ID_TOKEN",
                 "HTTP_X_FORWARDED_ACCESS_TOKEN", "HTTP_X_SSL_CLIENT_S_DN", "HTTP_X_CLIENT_CERT",
                 "HTTP_REMOTE_GROUPS", "HTTP_REMOTE_EMAIL", "HTTP_X_WEBAUTH_EMAIL", "HTTP_X_POMERIUM_CLAIM_EMAIL",
                 "HTTP_TAILSCALE_USER_LOGIN", "HTTP_X_AUTHENTIK_USERNAME", "HTTP_X_VOUCH_USER",
                 "HTTP_X_CREDENTIAL_USERNAME", "HTTP_X_PROXY_USER", "HTTP_AUTH_USER", "HTTP_X_AUTH_EMAIL",
                 "HTTP_X_EMAIL", "HTTP_X_ARR_CLIENTCERT", "HTTP_IMPERSONATE_USER", "HTTP_IMPERSONATE_GROUP",
                 "HTTP_X_ENDPOINT_API_USERINFO", "HTTP_X_APIGATEWAY_API_USERINFO", "HTTP_X_JWT_ASSERTION",
                 "HTTP_X_MIDDLEWARE_SUBREQUEST", "HTTP_X_INVOKE_PATH"):
        assert gone not in environ, gone
    # A client's address claims pass only from a trusted proxy.
    for claim in ("HTTP_X_REAL_IP", "HTTP_TRUE_CLIENT_IP", "HTTP_CLIENT_IP", "HTTP_VIA",
                  "HTTP_X_ORIGINAL_FORWARDED_FOR", "HTTP_FORWARDED_FOR", "HTTP_X_FORWARDED",
                  "HTTP_X_CUSTOM_IP_AUTHORIZATION", "HTTP_X_ORIGINAL_HOST", "HTTP_X_SCRIPT_NAME",
                  "HTTP_FLY_CLIENT_IP", "HTTP_X_ENVOY_EXTERNAL_ADDRESS", "HTTP_X_APPENGINE_USER_IP",
                  "HTTP_X_AZURE_CLIENTIP", "HTTP_X_AZURE_SOCKETIP", "HTTP_X_VERCEL_FORWARDED_FOR"):
        assert (claim in environ) == behind_proxy, claim


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_a_backends_cookie_goes_to_its_client_and_is_never_sent_again_by_us(
        upstream: LocalIdP, wsgi_backend: str, loop: str) -> None:
    """One pool carries everyone's requests: a cookie a backend set for one
    person's request must not ride along on the next person's."""
    async def main() -> tuple[httpx.Response, dict[str, str]]:
        # By name: a client's cookie jar may keep no cookie of a bare IP address.
        by_name = wsgi_backend.replace("127.0.0.1", "localhost")
        forwarder = Forwarder(site(upstream), {"acme": Backend(f"{by_name}/mcp", "/mcp")})
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=as_guarded(forwarder, None)),
                                     base_url="http://acme.test") as http:
            setting = await http.get("/mcp?set_cookie=session%3Dvictims-session%3B%20Path%3D%2F")
            http.cookies.clear()  # the next request is another client's, with no cookie of its own
            later = await http.get("/mcp")
        await forwarder.aclose()
        return setting, later.json()

    setting, environ = anyio.run(main, backend=loop)
    assert setting.headers["set-cookie"] == "session=victims-session; Path=/"  # its own client gets it
    assert "HTTP_COOKIE" not in environ


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_header_values_go_byte_for_byte_or_the_request_is_refused(
        upstream: LocalIdP, wsgi_backend: str, loop: str) -> None:
    """UTF-8 in a header value reaches the backend as the same bytes. A
    value in another charset (asyncio's client would re-encode it as UTF-8)
    or with a control character is refused with a 400 on either loop."""
    async def main() -> list[httpx.Response]:
        forwarder = Forwarder(site(upstream), {"acme": Backend(f"{wsgi_backend}/mcp", "/mcp")})
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=as_guarded(forwarder, None)),
                                     base_url="http://acme.test") as http:
            answers = [await http.get("/mcp", headers=[(b"x-name", value)]) for value in
                       ("jos\u00e9".encode(), b"jos\xe9", b"a\x01b", b"a\x7fb")]
        await forwarder.aclose()
        return answers

    utf8, *refused = anyio.run(main, backend=loop)
    assert utf8.status_code == 200
    # wsgiref reads header bytes as latin-1 (PEP 3333).
    assert utf8.json()["HTTP_X_NAME"] == "jos\u00e9".encode().decode("latin-1")
    for answer in refused:
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"


@pytest.mark.parametrize("loop", LOOPS)
def test_a_clients_address_claims_are_not_believed_by_the_server(loop: str, wsgi_backend: str,
                                                                 tmp_path: Path) -> None:
    """No proxy is trusted: the server hands the app the peer's own address
    and scheme (uvicorn, left to itself, believes X-Forwarded-* from 127.0.0.1)."""
    port = free_port()
    database = f"sqlite:///{tmp_path / 'proxy.db'}"
    token = seed_access_token(database, tmp_path / "keys", "acme", f"http://127.0.0.1:{port}/mcp")
    claims = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https", "X-Real-IP": "6.6.6.6",
              "Forwarded": "for=6.6.6.6;proto=https"}
    with serve(tmp_path, loop, port=port, database=database, tenant=f'backend = "{wsgi_backend}/mcp"') as served:
        answer = httpx.get(f"{served.base}/mcp", headers={"authorization": f"Bearer {token}", **claims},
                           timeout=10, trust_env=False)
    assert answer.status_code == 200, answer.text
    environ = answer.json()
    assert environ["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
    assert environ["HTTP_X_FORWARDED_PROTO"] == "http"
    assert environ["HTTP_FORWARDED"].endswith("proto=http")
    assert not [value for value in environ.values() if "6.6.6.6" in value], environ


@pytest.mark.parametrize("value", ["user-42", "jos\u00e9", "jos%C3%A9", "a\r\nX-MCP-Scopes: root", "100%", "mcp extra",
                                   "https://app.example/c%20d.json", " user-42 ", "  ", "\tuser\t"])
def test_identity_values_read_back_exactly_so_two_people_never_share_one(value: str) -> None:
    encoded = identity_value(value)
    assert encoded.isascii() and all(0x20 <= b < 0x7F for b in encoded)
    assert encoded == encoded.strip(), "a field value's edge spaces are not part of it (RFC 9110 §5.5)"
    assert unquote(encoded.decode("ascii")) == value
    # "josé" and a person whose id is literally "jos%C3%A9" are told apart.
    assert identity_value("jos\u00e9") != identity_value("jos%C3%A9")




def test_a_backend_cannot_set_our_cookies() -> None:
    """A backend that set the browser cookie would know the value a login is
    bound to, and could lend it to an attacker's login."""
    answer = [(b"Set-Cookie", b"__Host-mcp_browser=known; Path=/; Secure"), (b"set-cookie", b"mcp_browser=known"),
              (b"set-cookie", b"mcp_consent_acme=x.y"), (b"set-cookie", b"session=fine; Path=/"),
              (b"set-cookie", b"__Host-mcp_connections_acme=x.y; Path=/; Secure"),
              (b"content-type", b"application/json")]
    assert to_client(answer) == [(b"set-cookie", b"session=fine; Path=/"), (b"content-type", b"application/json")]


def test_a_backend_is_sent_none_of_our_cookies() -> None:
    """The connections page's cookie is Path=/ (a __Host- cookie must be):
    a backend behind the same host would otherwise receive it, and could
    use it to revoke the person's grants."""
    sent = [(b"cookie", b"__Host-mcp_connections_acme=signed.value; theirs=1; __Host-mcp_browser=b")]
    assert to_backend(sent, False, None) == [(b"cookie", b"theirs=1")]


@pytest.mark.parametrize("name", ["X.MCP.User", "x.mcp.scopes", "X~Mcp~Client~Id", "X-MCP.Principal-Type",
                                  "X.Forwarded.For", "Remote.User", "Impersonate.User", "Proxy.Authorization",
                                  "X*Upstream*Token"])
def test_identity_headers_spelled_with_other_punctuation_are_dropped(name: str) -> None:
    """A CGI-style backend files every character of a header name that is
    neither a letter nor a digit as "_" (RFC 3875 §4.1.18 names only "-"; some
    go further): "X.MCP.User" would arrive as the X-MCP-User we set. Names
    are compared with every such character as "-"."""
    kept = to_backend([(name.encode(), b"admin"), (b"x.other", b"1")], False, "X-Upstream-Token")
    assert kept == [(b"x.other", b"1")]
