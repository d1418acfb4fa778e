"""The official ``mcp`` SDK's three providers for clients without a browser
against a real ``serve`` process forwarding to a real MCP backend:
``ClientCredentialsOAuthProvider`` (a secret), ``PrivateKeyJWTOAuthProvider``
(private_key_jwt, keys given in the TOML) and
``IdentityAssertionOAuthProvider`` (an ID-JAG, SEP-990, from an identity
provider made here: its own key pair, its discovery document and JWK Set
served on loopback; it is the tenant's upstream, trusted as an ID-JAG
issuer). Each connects, lists the tools and calls one, which answers with
the headers the backend saw."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import anyio
import httpx2
import pytest
from forward_servers import GRACE, running_backend, start_proxy
from jwt_signers import Signer
from mcp import Client
from mcp.client.auth.extensions.client_credentials import (
    ClientCredentialsOAuthProvider,
    PrivateKeyJWTOAuthProvider,
    SignedJWTParameters,
)
from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from processes import free_port, stop_process

from mcp_oauth_proxy.core.context import token_hash

SECRET = "mcp_secret_machine-e2e-" + "x" * 20
DEADLINE = 30.0

CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
database = "memory://"

[[tenants]]
slug = "acme"
issuer = "{base}"
resource = "{base}/mcp"
backend = "{backend}/mcp"
forward_upstream_token_header = "X-Upstream-Token"
scopes = ["mcp"]
id_jag_issuers = ["upstream"]

[tenants.upstream]
kind = "oidc"
issuer = "{idp}"
client_id = "proxy-at-idp"
client_secret_env = "MACHINE_E2E_IDP_SECRET"

[[tenants.machine_clients]]
client_id = "nightly-job"
secret_sha256 = "{secret_sha256}"

[[tenants.machine_clients]]
client_id = "signed-job"
token_endpoint_auth_method = "private_key_jwt"
jwks = '{jwks}'

[[tenants.machine_clients]]
client_id = "agent"
grant_types = ["jwt-bearer"]
token_endpoint_auth_method = "client_secret_post"
secret_sha256 = "{secret_sha256}"
"""


class IdentityProvider:
    """The company's identity provider, as far as ID-JAGs go: it signs them
    with its own key, and publishes its discovery document and JWK Set."""

    def __init__(self) -> None:
        self.signer = Signer("ES256")
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                docs = {"/.well-known/openid-configuration": {
                    "issuer": idp.issuer, "authorization_endpoint": f"{idp.issuer}/authorize",
                    "token_endpoint": f"{idp.issuer}/token", "jwks_uri": f"{idp.issuer}/jwks"},
                    "/jwks": {"keys": [idp.signer.jwk]}}
                body = json.dumps(docs.get(self.path, {"error": "not_found"})).encode()
                self.send_response(200 if self.path in docs else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def id_jag(self, audience: str, resource: str, client_id: str, sub: str) -> str:
        """Leg 1 of SEP-990, done: the ID-JAG it would give the client."""
        return self.signer.id_jag(self.issuer, audience=audience, client_id=client_id, resource=resource,
                                  now=int(time.time()), sub=sub)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, IdentityProvider, Signer]]:
    where = tmp_path_factory.mktemp("machine-e2e")
    idp = IdentityProvider()
    signed_job = Signer("RS256")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        with running_backend(where) as backend:
            config = where / "proxy.toml"
            config.write_text(CONFIG.format(port=port, base=base, backend=backend, idp=idp.issuer,
                                            secret_sha256=token_hash(SECRET),
                                            jwks=json.dumps({"keys": [signed_job.jwk]})))
            proc = start_proxy(config, base, where / "proxy.log", {"MACHINE_E2E_IDP_SECRET": "idp-secret"},
                               trio=False)
            try:
                yield base, idp, signed_job
            finally:
                stop_process(proc, GRACE)
    finally:
        idp.stop()


async def _headers_through(base: str, provider: httpx2.Auth) -> dict[str, str]:
    """Connect, list the tools, call one: the headers the backend saw."""
    async with httpx2.AsyncClient(auth=provider, timeout=20) as http:
        with anyio.fail_after(DEADLINE):
            async with Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
                tools = await client.list_tools()
                assert "headers" in {t.name for t in tools.tools}
                result = await client.call_tool("headers", {})
                assert not result.is_error, result
                return {k.lower(): v for k, v in json.loads(result.content[0].text).items()}


def _run(scenario: Any, *args: Any) -> Any:
    return anyio.run(scenario, *args)


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_the_sdks_client_credentials_provider_calls_a_tool_as_the_client(served, method: str) -> None:
    base, _, _ = served
    provider = ClientCredentialsOAuthProvider(server_url=f"{base}/mcp", storage=MemoryStorage(),
                                              client_id="nightly-job", client_secret=SECRET,
                                              token_endpoint_auth_method=method, issuer=base)
    if method == "client_secret_post":
        # Registered for client_secret_basic: the other method is refused (RFC 6749 §2.3).
        with pytest.raises(BaseException):
            _run(_headers_through, base, provider)
        return
    seen = _run(_headers_through, base, provider)
    assert seen["x-mcp-principal-type"] == "client"
    assert seen["x-mcp-user"] == "client:nightly-job" and seen["x-mcp-client-id"] == "nightly-job"
    assert "x-upstream-token" not in seen and "authorization" not in seen


def test_the_sdks_private_key_jwt_provider_calls_a_tool_as_the_client(served) -> None:
    base, _, signed_job = served
    parameters = SignedJWTParameters(issuer="signed-job", subject="signed-job",
                                     signing_key=signed_job.private_pem, signing_algorithm="RS256")
    provider = PrivateKeyJWTOAuthProvider(server_url=f"{base}/mcp", storage=MemoryStorage(), client_id="signed-job",
                                          assertion_provider=parameters.create_assertion_provider(), issuer=base)
    seen = _run(_headers_through, base, provider)
    assert seen["x-mcp-principal-type"] == "client" and seen["x-mcp-user"] == "client:signed-job"


def test_the_sdks_private_key_jwt_provider_with_another_key_is_refused(served) -> None:
    base, _, _ = served
    parameters = SignedJWTParameters(issuer="signed-job", subject="signed-job",
                                     signing_key=Signer("RS256").private_pem, signing_algorithm="RS256")
    provider = PrivateKeyJWTOAuthProvider(server_url=f"{base}/mcp", storage=MemoryStorage(), client_id="signed-job",
                                          assertion_provider=parameters.create_assertion_provider(), issuer=base)
    with pytest.raises(BaseException) as refused:
        _run(_headers_through, base, provider)
    assert "invalid_client" in repr(refused.value) or "401" in repr(refused.value)


def test_the_sdks_identity_assertion_provider_calls_a_tool_as_the_person(served) -> None:
    base, idp, _ = served
    person = f"employee-{uuid.uuid4().hex[:6]}"
    asked: list[tuple[str, str]] = []

    async def fetch_id_jag(audience: str, resource: str) -> str:
        asked.append((audience, resource))
        return idp.id_jag(audience, resource, "agent", person)

    provider = IdentityAssertionOAuthProvider(server_url=f"{base}/mcp", storage=MemoryStorage(), client_id="agent",
                                              client_secret=SECRET, issuer=base, assertion_provider=fetch_id_jag)
    seen = _run(_headers_through, base, provider)
    assert asked == [(base, f"{base}/mcp")]
    # The person the identity provider named, as a browser login through it would name them.
    assert seen["x-mcp-principal-type"] == "user" and seen["x-mcp-user"] == person
    assert seen["x-mcp-client-id"] == "agent" and "x-upstream-token" not in seen


def test_an_id_jag_replayed_through_the_sdk_is_refused(served) -> None:
    base, idp, _ = served
    assertion = idp.id_jag(base, f"{base}/mcp", "agent", "replayed-person")

    async def same(audience: str, resource: str) -> str:
        return assertion

    first = IdentityAssertionOAuthProvider(server_url=f"{base}/mcp", storage=MemoryStorage(), client_id="agent",
                                           client_secret=SECRET, issuer=base, assertion_provider=same)
    assert _run(_headers_through, base, first)["x-mcp-user"] == "replayed-person"
    again = IdentityAssertionOAuthProvider(server_url=f"{base}/mcp", storage=MemoryStorage(), client_id="agent",
                                           client_secret=SECRET, issuer=base, assertion_provider=same)
    with pytest.raises(BaseException) as refused:
        _run(_headers_through, base, again)
    assert "invalid_grant" in repr(refused.value)
