"""The whole flow through the real ASGI app (on asyncio and on trio) and the
real WSGI app, with the tenant's upstream a real identity provider process
(tests/idp: oidc-provider, as an OpenID provider and shaped like GitHub):

discover -> register -> authorize -> our consent page -> the IdP's login
(and consent) pages -> our callback -> token -> a guarded request (whose app
uses the upstream token the guard hands it) -> refresh -> revoke -> refused.

Our app is reached through httpx's ASGI/WSGI transports mounted on its
host; the identity provider over real HTTP on 127.0.0.1. One httpx client
is the browser (cookies for both hosts), following redirects by hand.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Generator
from urllib.parse import urlencode

import attrs
import httpx
import pytest

from mcp_oauth_proxy.core.pkce import s256

from support import ServerClock
from realidp_apps import AsgiSite, WsgiSite, lifespan, make_site, protected_asgi, protected_wsgi
from realidp_browser import Person, Walk, walk_async, walk_sync
from realidp import ADA, GRACE, IdP

ISSUER = "http://acme.localhost:8000"
RESOURCE = f"{ISSUER}/mcp"
CALLBACK = f"{ISSUER}/oauth/callback"
# The MCP client's own redirect URI: the walk stops when the browser is sent there.
CLIENT_REDIRECT = "http://127.0.0.1:33418/callback"

# The identity provider's access tokens live this long; our clock moves on
# by half of it before each guarded request, when the upstream token is due
# for a refresh, so each exercises a real upstream refresh_token grant.
IDP_TOKEN_TTL = 120


@pytest.fixture(scope="module")
def oidc_idp(start_idp) -> IdP:
    return start_idp([CALLBACK], access_token_ttl=IDP_TOKEN_TTL)


@pytest.fixture(scope="module")
def github_idp(start_idp) -> IdP:
    return start_idp([CALLBACK], mode="github")


@attrs.frozen
class Browse:
    """A step of the flow: the person's browser, from this URL to the client."""

    url: str
    walk: Walk


@attrs.frozen
class Later:
    """A step of the flow: our server's clock moves on this many seconds."""

    seconds: int


@attrs.frozen
class Expect:
    person: dict[str, Any]
    user_id: str
    # Whether each guarded request makes the proxy refresh the upstream token.
    upstream_refreshes: bool
    # The pages the person fills in, in order (ours, then the IdP's).
    pages: tuple[str, ...]
    # Stop after redeeming the code twice.
    replay_code: bool = False


def expectations(idp: IdP, person: dict[str, Any]) -> Expect:
    if idp.mode == "oidc":
        return Expect(person, person["sub"], True, ("consent", "login", "idp-consent"))
    # GitHub: the numeric id names the person; its tokens do not expire.
    return Expect(person, str(person["id"]), False, ("consent", "login", "idp-consent"))


def page_kind(html: str) -> str:
    if 'name="decision"' in html:
        return "consent"
    if 'type="password"' in html:
        return "login"
    if "/confirm" in html:
        return "idp-consent"
    return "other"


Flow = Generator[Any, Any, dict[str, Any]]


def _get(url: str, token: str | None = None) -> httpx.Request:
    headers = {"accept": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return httpx.Request("GET", url, headers=headers)


def _form(url: str, data: dict[str, str]) -> httpx.Request:
    return httpx.Request("POST", url, content=urlencode(data).encode(),
                         headers={"content-type": "application/x-www-form-urlencoded", "accept": "application/json"})


def whole_flow(expect: Expect) -> Flow:
    """The client's side of the flow, as a generator of requests (and one
    browser walk), so the same steps run on every driver."""
    # Discovery, as an MCP client does it: 401 -> PRM -> AS metadata.
    first = yield _get(RESOURCE)
    assert first.status_code == 401, first.text
    challenge = first.headers["www-authenticate"]
    prm_url = re.search(r'resource_metadata="([^"]+)"', challenge).group(1)
    prm = (yield _get(prm_url)).json()
    assert prm["resource"] == RESOURCE and prm["authorization_servers"] == [ISSUER]
    meta = (yield _get(f"{ISSUER}/.well-known/oauth-authorization-server")).json()
    assert meta["issuer"] == ISSUER

    registered = yield httpx.Request("POST", meta["registration_endpoint"], json={
        "client_name": "Integration Client", "redirect_uris": [CLIENT_REDIRECT],
        "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"]})
    assert registered.status_code == 201, registered.text
    client_id = registered.json()["client_id"]

    verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(16)
    challenge_value = s256(verifier)
    walk = Walk()
    params = yield Browse(meta["authorization_endpoint"] + "?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": CLIENT_REDIRECT, "scope": "mcp",
        "state": state, "code_challenge": challenge_value, "code_challenge_method": "S256",
        "resource": RESOURCE}), walk)
    assert params["state"] == state and params["iss"] == ISSUER, params
    assert "error" not in params, params
    assert tuple(page_kind(p) for p in walk.pages) == expect.pages
    # The browser went through our callback, sent there by the identity provider.
    assert any(v.url.startswith(CALLBACK + "?") for v in walk.visits), walk.visits

    tokens = yield _form(meta["token_endpoint"], {
        "grant_type": "authorization_code", "code": params["code"], "redirect_uri": CLIENT_REDIRECT,
        "client_id": client_id, "code_verifier": verifier, "resource": RESOURCE})
    assert tokens.status_code == 200, tokens.text
    issued = tokens.json()
    assert issued["token_type"].lower() == "bearer" and issued["expires_in"] > 0
    access, refresh = issued["access_token"], issued["refresh_token"]
    if expect.replay_code:
        # The code is single use; a replay revokes what it gave (RFC 6749 §4.1.2).
        replay = yield _form(meta["token_endpoint"], {
            "grant_type": "authorization_code", "code": params["code"], "redirect_uri": CLIENT_REDIRECT,
            "client_id": client_id, "code_verifier": verifier})
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
        refused = yield _get(RESOURCE, access)
        assert refused.status_code == 401, refused.text
        renewed = yield _form(meta["token_endpoint"], {
            "grant_type": "refresh_token", "refresh_token": refresh, "client_id": client_id})
        assert renewed.status_code == 400 and renewed.json()["error"] == "invalid_grant"
        return {"client_id": client_id, "reports": []}

    # The guarded app sees the person the identity provider logged in, and
    # the upstream token it is handed works at the identity provider.
    seen = []
    for _ in range(2):
        yield Later(IDP_TOKEN_TTL // 2)
        answer = yield _get(RESOURCE, access)
        assert answer.status_code == 200, answer.text
        seen.append(answer.json())
    for report in seen:
        assert report["user_id"] == expect.user_id
        assert report["client_id"] == client_id and report["scopes"] == ["mcp"]
        assert report["upstream_status"] == 200
        assert report["upstream_profile"]["email"] == expect.person["email"]
    if expect.upstream_refreshes:
        assert seen[0]["upstream_token"] != seen[1]["upstream_token"], "the upstream token was not refreshed"
    else:
        assert seen[0]["upstream_token"] == seen[1]["upstream_token"]

    # Our refresh token: rotated, and the new access token works.
    renewed = yield _form(meta["token_endpoint"], {
        "grant_type": "refresh_token", "refresh_token": refresh, "client_id": client_id})
    assert renewed.status_code == 200, renewed.text
    access2, refresh2 = renewed.json()["access_token"], renewed.json()["refresh_token"]
    assert access2 != access and refresh2 != refresh
    answer = yield _get(RESOURCE, access2)
    assert answer.status_code == 200 and answer.json()["user_id"] == expect.user_id

    # Revoking the refresh token ends the grant: its tokens are refused.
    revoked = yield _form(meta["revocation_endpoint"], {"token": refresh2, "client_id": client_id,
                                                        "token_type_hint": "refresh_token"})
    assert revoked.status_code == 200, revoked.text
    for token in (access2, access):
        refused = yield _get(RESOURCE, token)
        assert refused.status_code == 401, refused.text
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    again = yield _form(meta["token_endpoint"], {
        "grant_type": "refresh_token", "refresh_token": refresh2, "client_id": client_id})
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    return {"client_id": client_id, "reports": seen}


async def drive_async(flow: Flow, client: httpx.AsyncClient, person: Person, clock: ServerClock) -> dict[str, Any]:
    answer: Any = None
    while True:
        try:
            step = flow.send(answer)
        except StopIteration as stop:
            return stop.value
        if isinstance(step, Later):
            answer = clock.advance(step.seconds)
        elif isinstance(step, Browse):
            answer = await walk_async(client, step.url, CLIENT_REDIRECT, person, step.walk)
        else:
            answer = await client.send(step)


def drive_sync(flow: Flow, client: httpx.Client, person: Person, clock: ServerClock) -> dict[str, Any]:
    answer: Any = None
    while True:
        try:
            step = flow.send(answer)
        except StopIteration as stop:
            return stop.value
        if isinstance(step, Later):
            answer = clock.advance(step.seconds)
        elif isinstance(step, Browse):
            answer = walk_sync(client, step.url, CLIENT_REDIRECT, person, step.walk)
        else:
            answer = client.send(step)


def _idp(request: pytest.FixtureRequest, kind: str) -> IdP:
    return request.getfixturevalue(f"{kind}_idp")


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("kind", ["oidc", "github"])
@pytest.mark.anyio
async def test_whole_flow_asgi(request: pytest.FixtureRequest, kind: str, anyio_backend: str,
                               server_clock: ServerClock) -> None:
    idp = _idp(request, kind)
    # Different people on the two event loops: the user id must come from the login.
    person = ADA if anyio_backend == "asyncio" else GRACE
    app = AsgiSite(make_site(idp, ISSUER, RESOURCE), protected_asgi(idp.userinfo_endpoint))
    async with lifespan(app.guarded):
        async with httpx.AsyncClient(mounts={ISSUER: httpx.ASGITransport(app)}, trust_env=False,
                                     timeout=20) as client:
            result = await drive_async(whole_flow(expectations(idp, person)), client,
                                       Person(person["username"], person["password"]), server_clock)
    await app.aclose()
    assert result["reports"][0]["user_id"] == (person["sub"] if kind == "oidc" else str(person["id"]))


@pytest.mark.parametrize("kind", ["oidc", "github"])
def test_whole_flow_wsgi(request: pytest.FixtureRequest, kind: str, server_clock: ServerClock) -> None:
    idp = _idp(request, kind)
    app = WsgiSite(make_site(idp, ISSUER, RESOURCE), protected_wsgi(idp.userinfo_endpoint))
    with httpx.Client(mounts={ISSUER: httpx.WSGITransport(app)}, trust_env=False, timeout=20) as client:
        drive_sync(whole_flow(expectations(idp, ADA)), client, Person(ADA["username"], ADA["password"]),
                   server_clock)


def test_code_replay_revokes_its_tokens(oidc_idp: IdP, server_clock: ServerClock) -> None:
    app = WsgiSite(make_site(oidc_idp, ISSUER, RESOURCE), protected_wsgi(oidc_idp.userinfo_endpoint))
    with httpx.Client(mounts={ISSUER: httpx.WSGITransport(app)}, trust_env=False, timeout=20) as client:
        expect = attrs.evolve(expectations(oidc_idp, ADA), replay_code=True)
        drive_sync(whole_flow(expect), client, Person(ADA["username"], ADA["password"]), server_clock)


def _authorization_url(client: httpx.Client) -> str:
    """Registers a public client; its authorization request (PKCE S256, state "s")."""
    registered = client.post(f"{ISSUER}/oauth/register", json={
        "redirect_uris": [CLIENT_REDIRECT], "token_endpoint_auth_method": "none"})
    assert registered.status_code == 201
    return f"{ISSUER}/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": registered.json()["client_id"], "redirect_uri": CLIENT_REDIRECT,
        "state": "s", "code_challenge_method": "S256", "code_challenge": s256(secrets.token_urlsafe(48))})


@pytest.mark.parametrize("kind", ["oidc", "github"])
def test_wrong_password_never_reaches_our_callback(request: pytest.FixtureRequest, kind: str) -> None:
    idp = _idp(request, kind)
    app = WsgiSite(make_site(idp, ISSUER, RESOURCE), protected_wsgi(idp.userinfo_endpoint))
    with httpx.Client(mounts={ISSUER: httpx.WSGITransport(app)}, trust_env=False, timeout=20) as client:
        url = _authorization_url(client)
        walk = Walk()
        with pytest.raises(AssertionError, match="-> 401"):
            walk_sync(client, url, CLIENT_REDIRECT, Person("ada", "not the password"), walk)
        assert not any(v.url.startswith(CALLBACK) for v in walk.visits)


@pytest.mark.parametrize("kind", ["oidc", "github"])
def test_person_denies_at_our_consent_page(request: pytest.FixtureRequest, kind: str) -> None:
    """Deny on our page: the client gets access_denied with iss, and the
    identity provider is never visited."""
    idp = _idp(request, kind)
    app = WsgiSite(make_site(idp, ISSUER, RESOURCE), protected_wsgi(idp.userinfo_endpoint))
    with httpx.Client(mounts={ISSUER: httpx.WSGITransport(app)}, trust_env=False, timeout=20) as client:
        url = _authorization_url(client)
        walk = Walk()
        params = walk_sync(client, url, CLIENT_REDIRECT, Person("ada", ADA["password"], decision="deny"), walk)
    assert params["error"] == "access_denied" and params["state"] == "s" and params["iss"] == ISSUER
    assert not any(v.url.startswith(idp.issuer) for v in walk.visits)


def test_oauth2_upstream_that_sends_iss(oidc_idp: IdP) -> None:
    """A plain OAuth 2 upstream (endpoints given, no discovery) that sends
    RFC 9207 ``iss`` in its authorization responses, as oidc-provider,
    Keycloak and others do; its issuer is in the config."""
    from mcp_oauth_proxy import config as config_mod
    from mcp_oauth_proxy.app import build_site

    config = config_mod.parse({"tenants": [{
        "slug": "acme", "issuer": ISSUER, "resource": RESOURCE,
        "upstream": {"kind": "oauth2", "issuer": oidc_idp.issuer, "client_id": oidc_idp.client_id,
                     "client_secret": oidc_idp.client_secret,
                     "authorization_endpoint": oidc_idp.authorization_endpoint,
                     "token_endpoint": oidc_idp.token_endpoint, "userinfo_endpoint": oidc_idp.userinfo_endpoint,
                     "scopes": ["openid", "email"], "token_auth_method": "client_secret_post"}}]})
    app = WsgiSite(build_site(config, {}), protected_wsgi(oidc_idp.userinfo_endpoint))
    with httpx.Client(mounts={ISSUER: httpx.WSGITransport(app)}, trust_env=False, timeout=20) as client:
        url = _authorization_url(client)
        params = walk_sync(client, url, CLIENT_REDIRECT, Person(ADA["username"], ADA["password"]))
    assert "error" not in params, params
    assert "code" in params
