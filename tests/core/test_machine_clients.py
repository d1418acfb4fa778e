"""Clients without a browser at the token endpoint: client credentials
(RFC 6749 §4.4) with a secret or private_key_jwt (RFC 7523 §2.2, §3), and
the jwt-bearer grant of an ID-JAG (RFC 7523 §2.1, SEP-990). Every refusal
rule has its case; each attack is tried before the good path it guards."""

from __future__ import annotations

import base64
import json
from typing import Any

import attrs
import pytest

from jwt_signers import CLIENT_ASSERTION_TYPE, JWT_BEARER, Signer, hmac_with, unsigned
from mcp_oauth_proxy.core.context import token_hash
from mcp_oauth_proxy.core.errors import NoUpstreamTokens
from mcp_oauth_proxy.core.flows.upstream_token import fresh_upstream_token
from mcp_oauth_proxy.core.http import HttpRequest, HttpResponse
from mcp_oauth_proxy.core.models import CLIENT_CREDENTIALS, Client, Principal
from mcp_oauth_proxy.runtime import sync_performer
from mcp_oauth_proxy.upstream.key_sets import REFETCH_AFTER, KeySets
from support import ISSUER, NOW, RESOURCE, UPSTREAM_ISSUER, FakeIdP, Harness, tenant

TOKEN = f"{ISSUER}/oauth/token"
PARTNER = "https://partner-idp.example"
CLIENT_JWKS_URI = "https://keys.example/client.jwks"
SECRET = "mcp_secret_" + "s" * 43


@attrs.define
class Web:
    """The documents on the web the key sets fetch (discovery, JWK Sets),
    counting each fetch; everything else goes to the fake upstream."""

    idp: FakeIdP
    documents: dict[str, Any] = attrs.Factory(dict)
    fetched: list[str] = attrs.Factory(list)
    public_only: list[bool] = attrs.Factory(list)  # of each document fetched

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.url in self.documents:
            self.fetched.append(request.url)
            self.public_only.append(request.public_only)
            return HttpResponse(200, (("content-type", "application/json"),),
                                json.dumps(self.documents[request.url]).encode())
        if request.url.startswith((PARTNER, "https://keys.example", f"{UPSTREAM_ISSUER}/.well-known",
                                   f"{UPSTREAM_ISSUER}/jwks")):
            self.fetched.append(request.url)
            return HttpResponse(404, (), b"")
        return self.idp(request)

    def publish(self, issuer: str, *signers: Signer) -> None:
        """An issuer's OIDC discovery document and its JWK Set."""
        self.documents[f"{issuer}/.well-known/openid-configuration"] = {"issuer": issuer, "jwks_uri": f"{issuer}/jwks"}
        self.documents[f"{issuer}/jwks"] = {"keys": [s.jwk for s in signers]}


@attrs.define
class MachineHarness(Harness):
    web: Web = None  # type: ignore[assignment]
    seconds: float = 0.0  # the key sets' clock
    key_sets: KeySets = None  # type: ignore[assignment]

    def __attrs_post_init__(self) -> None:
        self.web = Web(self.idp)
        self.key_sets = KeySets(clock=lambda: self.seconds)

    def perform(self) -> Any:
        return sync_performer(self.store, self.web, sleep=lambda s: None, resolve_keys=self.key_sets.resolve)


def machine(client_id: str = "mcp_client_robot", *, method: str = "client_secret_basic",
            grants: tuple[str, ...] = (CLIENT_CREDENTIALS,), **kw: Any) -> Client:
    if method.startswith("client_secret"):
        kw.setdefault("secret_hash", token_hash(SECRET))
    return Client(tenant="acme", client_id=client_id, redirect_uris=(), token_endpoint_auth_method=method,
                  grant_types=grants, response_types=(), application_type="web", created_at=NOW, **kw)


def basic(client_id: str, secret: str) -> list[tuple[str, str]]:
    return [("authorization", "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode())]


def harness(*clients: Client, id_jag_issuers: tuple[str, ...] = ()) -> MachineHarness:
    h = MachineHarness(tenant=tenant(machine_clients=clients, id_jag_issuers=id_jag_issuers))
    return h


def error_of(response: Any) -> str:
    return response.json()["error"]


# -- client credentials with a secret ------------------------------------------------------


def test_a_wrong_secret_is_invalid_client():
    h = harness(machine())
    response = h.token({"grant_type": "client_credentials"}, basic("mcp_client_robot", SECRET + "x"))
    assert response.status == 401 and error_of(response) == "invalid_client"
    response = h.token({"grant_type": "client_credentials", "client_id": "mcp_client_robot", "client_secret": SECRET},
                       )  # registered for client_secret_basic, not post
    assert error_of(response) == "invalid_client"


def test_a_client_not_marked_as_a_machine_client_gets_unauthorized_client():
    h = harness()
    client = h.register(token_endpoint_auth_method="client_secret_post")
    response = h.token({"grant_type": "client_credentials", "client_id": client["client_id"],
                        "client_secret": client["client_secret"]})
    assert response.status == 400 and error_of(response) == "unauthorized_client"
    # Nor can registration make one: only an operator can.
    refused = h.request("POST", f"{ISSUER}/oauth/register", json_body={
        "redirect_uris": ["http://127.0.0.1:1/cb"], "grant_types": ["authorization_code", "client_credentials"]})
    assert refused.status == 400 and error_of(refused) == "invalid_client_metadata"


def test_a_machine_client_asking_for_scope_or_resource_it_may_not_have_is_refused():
    h = harness(machine(scope="mcp"))
    headers = basic("mcp_client_robot", SECRET)
    assert error_of(h.token({"grant_type": "client_credentials", "scope": "mcp:admin"}, headers)) == "invalid_scope"
    assert error_of(h.token({"grant_type": "client_credentials", "resource": "https://other.example/mcp"},
                            headers)) == "invalid_target"


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_client_credentials_gives_the_client_a_token_for_itself_and_no_refresh_token(method):
    h = harness(machine(method=method, scope="mcp"))
    form = {"grant_type": "client_credentials", "resource": RESOURCE}
    if method == "client_secret_post":
        response = h.token({**form, "client_id": "mcp_client_robot", "client_secret": SECRET})
    else:
        response = h.token(form, basic("mcp_client_robot", SECRET))
    assert response.status == 200, response.body
    body = response.json()
    assert "refresh_token" not in body and body["scope"] == "mcp" and body["token_type"] == "Bearer"
    principal = h.guard(body["access_token"])
    assert isinstance(principal, Principal)
    assert principal.principal_type == "client" and principal.user_id == "client:mcp_client_robot"
    assert principal.client_id == "mcp_client_robot" and not principal.has_upstream_tokens
    # It has no upstream tokens to hand the MCP server: a clear error, not a crash.
    with pytest.raises(NoUpstreamTokens, match="no upstream tokens"):
        h.run(fresh_upstream_token(principal.grant_id, h.ctx()))
    assert SECRET not in h.store.dump() and body["access_token"] not in h.store.dump()
    # Userinfo is about a person: a client's own token has none behind it.
    me = h.request("GET", f"{ISSUER}/oauth/userinfo", headers=[("authorization", f"Bearer {body['access_token']}")])
    assert me.status == 401 and error_of(me) == "invalid_token"


def test_introspection_tells_a_clients_own_token_from_a_persons():
    """A person's says "user" (test_resource_endpoints.py); a client's own, "client"."""
    h = harness(machine(method="client_secret_basic", scope="mcp"))
    mine = h.token({"grant_type": "client_credentials"}, basic("mcp_client_robot", SECRET)).json()["access_token"]
    answer = h.request("POST", f"{ISSUER}/oauth/introspect", form={"token": mine},
                       headers=basic("mcp_client_robot", SECRET)).json()
    assert answer["active"] is True and answer["principal_type"] == "client"
    assert answer["sub"] == "client:mcp_client_robot"


# -- private_key_jwt --------------------------------------------------------------------------


def pkj(h: MachineHarness, assertion: str, **form: str) -> Any:
    return h.token({"grant_type": "client_credentials", "client_assertion_type": CLIENT_ASSERTION_TYPE,
                    "client_assertion": assertion, **form})


def keyed(signer: Signer, **kw: Any) -> MachineHarness:
    return harness(machine(method="private_key_jwt", jwks=json.dumps({"keys": [signer.jwk]}), **kw))


ME = "mcp_client_robot"


@pytest.mark.parametrize("over, why", [
    ({"aud": "https://other.example/oauth/token"}, "aud"),
    # RFC 7523bis §2.1 (client authentication): the issuer identifier as the
    # sole audience; the token endpoint "MUST NOT be used": a malicious
    # server's metadata naming our token endpoint as its own got the
    # client to sign an assertion good here.
    ({"aud": TOKEN}, "aud"),
    ({"aud": [TOKEN]}, "aud"),
    ({"aud": None}, "aud"),
    # One assertion for two servers (another tenant's token endpoint beside
    # ours) would be good at each, its jti spent at each apart: refused.
    ({"aud": [TOKEN, "https://other.example/oauth/token"]}, "one audience"),
    ({"aud": [TOKEN, ISSUER]}, "one audience"),
    ({"exp": NOW - 1}, "expired"),
    ({"exp": None}, "exp"),
    ({"exp": NOW + 3600}, "ahead"),
    ({"iat": NOW + 600}, "iat"),
    ({"nbf": NOW + 600}, "not valid yet"),
    ({"jti": None}, "jti"),
    ({"iss": "someone-else"}, "iss and sub"),
    ({"sub": "someone-else", "iss": "someone-else"}, "unknown client"),
])
def test_a_client_assertion_breaking_a_rule_is_invalid_client(over, why):
    signer = Signer("ES256")
    h = keyed(signer)
    response = pkj(h, signer.assertion(ME, ISSUER, NOW, **over))
    assert response.status == 401 and error_of(response) == "invalid_client", response.body
    assert why in response.json()["error_description"]


def test_an_assertion_with_alg_none_or_hmac_keyed_with_the_public_key_is_refused():
    signer = Signer("RS256")
    h = keyed(signer)
    claims = {"iss": ME, "sub": ME, "aud": ISSUER, "exp": NOW + 60, "jti": "j1"}
    for forged in (unsigned(claims, kid=signer.kid), hmac_with(signer.public_pem, claims, kid=signer.kid),
                   hmac_with(json.dumps(signer.jwk).encode(), claims, kid=signer.kid)):
        response = pkj(h, forged)
        assert error_of(response) == "invalid_client" and "alg" in response.json()["error_description"]


def test_an_assertion_signed_by_another_key_or_tampered_with_is_refused():
    mine, theirs = Signer("ES256", kid="k1"), Signer("ES256", kid="k1")
    h = keyed(mine)
    assert "signature" in pkj(h, theirs.assertion(ME, ISSUER, NOW)).json()["error_description"]
    good = mine.assertion(ME, ISSUER, NOW)
    head, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged_payload = base64.urlsafe_b64encode(json.dumps({**claims, "exp": NOW + 200}).encode()).rstrip(b"=")
    assert error_of(pkj(h, f"{head}.{forged_payload.decode()}.{signature}")) == "invalid_client"


def test_a_replayed_assertion_is_refused():
    signer = Signer("EdDSA")
    h = keyed(signer)
    assertion = signer.assertion(ME, ISSUER, NOW)
    assert pkj(h, assertion).status == 200
    replay = pkj(h, assertion)
    assert replay.status == 401 and "used before" in replay.json()["error_description"]


def test_an_assertion_must_name_the_client_it_authenticates_and_be_the_only_method():
    signer = Signer("ES256")
    h = keyed(signer)
    assert error_of(pkj(h, signer.assertion(ME, ISSUER, NOW), client_id="mcp_client_other")) == "invalid_client"
    response = h.token({"grant_type": "client_credentials", "client_assertion_type": CLIENT_ASSERTION_TYPE,
                        "client_assertion": signer.assertion(ME, ISSUER, NOW)}, basic(ME, SECRET))
    assert error_of(response) == "invalid_request"
    assert error_of(h.token({"grant_type": "client_credentials", "client_assertion_type": "urn:other",
                             "client_assertion": signer.assertion(ME, ISSUER, NOW)})) == "invalid_client"
    # A client registered for a secret cannot authenticate with an assertion instead, nor the reverse.
    h2 = harness(machine())
    assert error_of(pkj(h2, signer.assertion(ME, ISSUER, NOW))) == "invalid_client"
    assert error_of(h.token({"grant_type": "client_credentials"}, basic(ME, SECRET))) == "invalid_client"


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
@pytest.mark.parametrize("audience", [ISSUER, [ISSUER]])
def test_private_key_jwt_with_keys_given_at_registration(alg, audience):
    signer = Signer(alg)
    h = keyed(signer)
    response = pkj(h, signer.assertion(ME, audience, NOW), client_id=ME)
    assert response.status == 200, response.body
    assert h.guard(response.json()["access_token"]).principal_type == "client"


def test_keys_from_a_jwks_uri_are_cached_and_fetched_again_for_an_unknown_kid_at_most_every_few_seconds():
    old, new, stranger = Signer("RS256", kid="old"), Signer("RS256", kid="new"), Signer("RS256", kid="who")
    h = harness(machine(method="private_key_jwt", jwks_uri=CLIENT_JWKS_URI))
    h.web.documents[CLIENT_JWKS_URI] = {"keys": [old.jwk]}
    assert pkj(h, old.assertion(ME, ISSUER, NOW)).status == 200
    assert pkj(h, old.assertion(ME, ISSUER, NOW)).status == 200
    assert h.web.fetched == [CLIENT_JWKS_URI]  # cached
    # An unknown kid: fetched again, then refused.
    h.seconds += REFETCH_AFTER
    response = pkj(h, stranger.assertion(ME, ISSUER, NOW))
    assert error_of(response) == "invalid_client" and "kid" in response.json()["error_description"]
    assert h.web.fetched == [CLIENT_JWKS_URI] * 2
    # Made-up kids do not make us hammer the client's server: not again so soon.
    for _ in range(5):
        assert error_of(pkj(h, Signer("RS256").assertion(ME, ISSUER, NOW))) == "invalid_client"
    assert h.web.fetched == [CLIENT_JWKS_URI] * 2
    # The client rotated its keys: its new kid is found once they are fetched again.
    h.web.documents[CLIENT_JWKS_URI] = {"keys": [new.jwk]}
    h.seconds += REFETCH_AFTER
    assert pkj(h, new.assertion(ME, ISSUER, NOW)).status == 200
    assert h.web.fetched == [CLIENT_JWKS_URI] * 3


def test_keys_of_the_wrong_kind_are_never_used():
    """A symmetric ("oct") key, an encryption key, a key for another alg."""
    signer = Signer("ES256", kid="k")
    secret = base64.urlsafe_b64encode(b"shared-secret").rstrip(b"=").decode()
    claims = {"iss": ME, "sub": ME, "aud": ISSUER, "exp": NOW + 60, "jti": "j"}
    for jwk, token in (
        ({"kty": "oct", "k": secret, "kid": "k"}, hmac_with(b"shared-secret", claims, kid="k")),
        ({**signer.jwk, "use": "enc"}, signer.assertion(ME, ISSUER, NOW)),
        ({**signer.jwk, "alg": "ES384"}, signer.assertion(ME, ISSUER, NOW)),
    ):
        h = harness(machine(method="private_key_jwt", jwks=json.dumps({"keys": [jwk]})))
        assert error_of(pkj(h, token)) == "invalid_client"


# -- ID-JAG (jwt-bearer) ------------------------------------------------------------------------

IDJAG_CLIENT = "mcp_client_agent"


def idjag_harness(*signers: Signer, issuers: tuple[str, ...] = ("upstream", PARTNER), **kw: Any) -> MachineHarness:
    h = harness(machine(IDJAG_CLIENT, method="client_secret_post", grants=(JWT_BEARER,), **kw),
                id_jag_issuers=issuers)
    h.web.publish(UPSTREAM_ISSUER, *signers)
    h.web.publish(PARTNER, *signers)
    return h


def exchange(h: MachineHarness, assertion: str, **form: str) -> Any:
    return h.token({"grant_type": JWT_BEARER, "assertion": assertion, "client_id": IDJAG_CLIENT,
                    "client_secret": SECRET, **form})


def grant_of(signer: Signer, issuer: str = UPSTREAM_ISSUER, **over: Any) -> str:
    claims = {"audience": ISSUER, "client_id": IDJAG_CLIENT, "resource": RESOURCE, **over}
    return signer.id_jag(issuer, now=NOW, **claims)


@pytest.mark.parametrize("over, why", [
    ({"aud": "https://other.example"}, "aud"),
    ({"aud": f"{ISSUER}/oauth/token"}, "aud"),
    ({"client_id": "mcp_client_other"}, "another client"),
    ({"client_id": None}, "client_id"),
    ({"resource": "https://other.example/mcp"}, "another resource"),
    ({"resource": None}, "resource"),
    ({"exp": NOW - 1}, "expired"),
    ({"exp": NOW + 3600}, "ahead"),
    ({"iat": None}, "iat"),
    ({"iat": NOW - 3600}, "iat"),
    ({"jti": None}, "jti"),
    ({"sub": None}, "sub"),
    ({"typ": "JWT"}, "typ"),
    ({"typ": "at+jwt"}, "typ"),
    ({"aud": [ISSUER, "https://other.example"]}, "one audience"),
])
def test_an_id_jag_breaking_a_rule_is_invalid_grant(over, why):
    signer = Signer("RS256")
    h = idjag_harness(signer)
    response = exchange(h, grant_of(signer, **over))
    assert response.status == 400 and error_of(response) == "invalid_grant", response.body
    assert why in response.json()["error_description"]


def test_an_id_jag_from_an_untrusted_issuer_is_refused_without_fetching_anything():
    signer = Signer("ES256")
    h = idjag_harness(signer)
    h.web.publish("https://evil.example", signer)
    response = exchange(h, grant_of(signer, "https://evil.example"))
    assert error_of(response) == "invalid_grant" and "not trusted" in response.json()["error_description"]
    assert h.web.fetched == []
    # The upstream's issuer is trusted only where the tenant says so.
    h2 = idjag_harness(signer, issuers=(PARTNER,))
    assert error_of(exchange(h2, grant_of(signer, UPSTREAM_ISSUER))) == "invalid_grant"


def test_an_id_jag_with_alg_none_or_hmac_or_an_unknown_kid_is_refused():
    signer = Signer("RS256")
    h = idjag_harness(signer)
    claims = {"iss": UPSTREAM_ISSUER, "sub": "user-42", "aud": ISSUER, "client_id": IDJAG_CLIENT,
              "resource": RESOURCE, "iat": NOW, "exp": NOW + 60, "jti": "x"}
    for forged in (unsigned(claims, typ="oauth-id-jag+jwt", kid=signer.kid),
                   hmac_with(signer.public_pem, claims, typ="oauth-id-jag+jwt", kid=signer.kid)):
        assert error_of(exchange(h, forged)) == "invalid_grant"
    assert h.web.fetched == []
    assert exchange(h, grant_of(signer)).status == 200  # the keys fetched
    h.seconds += REFETCH_AFTER
    stranger = Signer("RS256", kid="unknown")
    response = exchange(h, grant_of(stranger))
    assert error_of(response) == "invalid_grant" and "kid" in response.json()["error_description"]
    # Discovery and keys, then the keys once more for the unknown kid.
    jwks = f"{UPSTREAM_ISSUER}/jwks"
    assert h.web.fetched == [f"{UPSTREAM_ISSUER}/.well-known/openid-configuration", jwks,
                             f"{UPSTREAM_ISSUER}/.well-known/openid-configuration", jwks]


def test_a_replayed_id_jag_is_refused():
    signer = Signer("ES256")
    h = idjag_harness(signer)
    assertion = grant_of(signer)
    assert exchange(h, assertion).status == 200
    replay = exchange(h, assertion)
    assert error_of(replay) == "invalid_grant" and "used before" in replay.json()["error_description"]


def test_the_jwt_bearer_grant_needs_a_client_registered_for_it_and_a_tenant_trusting_an_issuer():
    signer = Signer("ES256")
    h = idjag_harness(signer)
    h.tenant = attrs.evolve(h.tenant, machine_clients=h.tenant.machine_clients + (
        machine("mcp_client_robot", method="client_secret_post"),))
    response = h.token({"grant_type": JWT_BEARER, "assertion": grant_of(signer), "client_id": "mcp_client_robot",
                        "client_secret": SECRET})
    assert error_of(response) == "unauthorized_client"
    assert error_of(exchange(h, grant_of(signer), client_secret="wrong")) == "invalid_client"
    plain = harness(machine(IDJAG_CLIENT, method="client_secret_post", grants=(JWT_BEARER,)))
    assert error_of(exchange(plain, grant_of(signer))) == "unsupported_grant_type"
    assert error_of(exchange(h, grant_of(signer), resource="https://other.example/mcp")) == "invalid_target"


def test_an_id_jag_gives_the_person_a_token_as_a_login_would(caplog):
    signer = Signer("RS256")
    h = idjag_harness(signer)
    response = exchange(h, grant_of(signer, sub="ada"), resource=RESOURCE)
    assert response.status == 200, response.body
    body = response.json()
    assert "refresh_token" not in body  # SEP-990: a fresh ID-JAG instead
    principal = h.guard(body["access_token"])
    # The user id a browser login through the upstream gives: its sub.
    assert principal.user_id == "ada" and principal.principal_type == "user"
    assert principal.client_id == IDJAG_CLIENT and not principal.has_upstream_tokens
    events = [e.event for e in h.store.list_audit_events(limit=10)]
    assert events[:2] == ["tokens_issued", "login_completed"]
    # Another trusted issuer's people are named with it: none passes for the upstream's.
    other = exchange(h, grant_of(signer, PARTNER, sub="ada"))
    assert h.guard(other.json()["access_token"]).user_id == f"{PARTNER}#ada"


def test_an_id_jag_scope_bounds_the_token_scope():
    signer = Signer("ES256")
    h = idjag_harness(signer)
    assert exchange(h, grant_of(signer, scope="mcp")).json()["scope"] == "mcp"
    assert error_of(exchange(h, grant_of(signer, scope="mcp"), scope="mcp:admin")) == "invalid_scope"
    assert error_of(exchange(h, grant_of(signer, scope="other"))) == "invalid_scope"
    assert exchange(h, grant_of(signer)).json()["scope"] == "mcp mcp:admin"


def test_metadata_advertises_jwt_bearer_only_where_an_issuer_is_trusted():
    def grants(h: Harness) -> list[str]:
        return h.request("GET", f"{ISSUER}/.well-known/oauth-authorization-server").json()["grant_types_supported"]

    assert JWT_BEARER in grants(idjag_harness())
    assert JWT_BEARER not in grants(harness())


def test_no_fetch_is_made_for_a_malformed_assertion():
    h = idjag_harness()
    for junk in ("", "a.b", "not-a-jwt", "x" * 20000):
        response = exchange(h, junk)
        assert error_of(response) in ("invalid_grant", "invalid_request")
    assert h.web.fetched == []


@pytest.mark.parametrize("organizations", [False, True])
def test_an_organizations_server_fetches_keys_from_public_addresses_only(organizations):
    """A server kept in the database is an organization's: whoever wrote its
    machine clients' jwks_uri and its ID-JAG issuers must not reach our
    network through them (upstream/egress.py PUBLIC_ONLY)."""
    signer = Signer("RS256")
    h = harness(machine(method="private_key_jwt", jwks_uri=CLIENT_JWKS_URI))
    h.tenant = attrs.evolve(h.tenant, fetches_public_only=organizations)
    h.web.documents[CLIENT_JWKS_URI] = {"keys": [signer.jwk]}
    assert pkj(h, signer.assertion(ME, ISSUER, NOW)).status == 200
    j = idjag_harness(signer)
    j.tenant = attrs.evolve(j.tenant, fetches_public_only=organizations)
    assert exchange(j, grant_of(signer, PARTNER, sub="ada")).status == 200
    assert h.web.fetched == [CLIENT_JWKS_URI] and j.web.fetched == [f"{PARTNER}/.well-known/openid-configuration",
                                                                     f"{PARTNER}/jwks"]
    assert h.web.public_only + j.web.public_only == [organizations] * 3
