"""Provider presets and OIDC discovery (against a LocalIdP on loopback)."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
from adapters.local_idp import LocalIdP

from mcp_oauth_proxy.core.effects import Fetch, run_sync
from mcp_oauth_proxy.core.http import HttpResponse
from mcp_oauth_proxy.runtime import sync_performer
from mcp_oauth_proxy.storage.memory import MemoryStore
from mcp_oauth_proxy.upstream import providers
from mcp_oauth_proxy.upstream.http import SyncFetcher


@pytest.fixture
def idp() -> Iterator[LocalIdP]:
    server = LocalIdP("oidc")
    yield server
    server.stop()


def resolve(source: Any) -> Any:
    return run_sync(source.resolve(), sync_performer(MemoryStore(), SyncFetcher(timeout=1)))


def test_discovery_reads_endpoints_and_is_cached(idp: LocalIdP) -> None:
    now = [0.0]
    source = providers.oidc(idp.url, "cid", "secret", clock=lambda: now[0])
    up = resolve(source)
    assert up.authorization_endpoint == f"{idp.url}/authorize" and up.token_endpoint == f"{idp.url}/token"
    assert up.userinfo_endpoint == f"{idp.url}/userinfo" and up.issuer == idp.url
    assert up.oidc and up.iss_parameter_supported and up.token_auth_method == "client_secret_basic"
    assert up.client_id == "cid" and up.scopes == ("openid", "profile", "email")
    idp.fault = "500"
    assert resolve(source) == up  # cached: no request
    assert idp.requests.count("/.well-known/openid-configuration") == 1
    now[0] += providers.DISCOVERY_TTL + 1
    assert resolve(source) == up  # looked again once the cache lapsed; the failure keeps what it had
    assert idp.requests.count("/.well-known/openid-configuration") == 2
    idp.fault = None
    assert resolve(source) == up  # and waits before looking again
    assert idp.requests.count("/.well-known/openid-configuration") == 2
    now[0] += providers.RETRY_FIRST
    assert resolve(source) == up
    assert idp.requests.count("/.well-known/openid-configuration") == 3
    now[0] += providers.DISCOVERY_TTL - 1
    assert resolve(source) == up  # a success starts a new day
    assert idp.requests.count("/.well-known/openid-configuration") == 3


def test_a_failed_discovery_is_tried_again_after_a_growing_wait(idp: LocalIdP) -> None:
    now = [0.0]
    source = providers.oidc(idp.url, "cid", "secret", clock=lambda: now[0])
    idp.fault = "500"
    with pytest.raises(providers.UpstreamNotReady, match="HTTP 500"):
        resolve(source)
    waits = []
    for _ in range(8):
        asked = idp.requests.count("/.well-known/openid-configuration")
        waited = 0.0
        while True:  # step the clock until discovery is tried again
            now[0] += 0.5
            waited += 0.5
            try:
                resolve(source)
            except providers.UpstreamNotReady as exc:
                if "HTTP 500" in str(exc):
                    break
                # Meanwhile the answer comes at once, and nothing is sent.
                assert "trying again in" in str(exc)
                assert idp.requests.count("/.well-known/openid-configuration") == asked
        waits.append(waited)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    idp.fault = None
    now[0] += providers.RETRY_MAX
    assert resolve(source).token_endpoint == f"{idp.url}/token"


def test_one_request_refreshes_the_endpoints_while_the_others_keep_the_old_ones(idp: LocalIdP) -> None:
    now = [0.0]
    source = providers.oidc(idp.url, "cid", "secret", clock=lambda: now[0])
    up = resolve(source)
    now[0] += providers.DISCOVERY_TTL + 1
    refreshing = source.resolve()
    fetch = next(refreshing)  # this one asks the issuer, and waits for it
    assert isinstance(fetch, Fetch) and fetch.request.url.endswith("/.well-known/openid-configuration")
    assert resolve(source) == up  # meanwhile the others answer at once, with what they had
    assert idp.requests.count("/.well-known/openid-configuration") == 1
    with pytest.raises(StopIteration) as done:
        refreshing.send(SyncFetcher(timeout=1)(fetch.request))
    assert done.value.value == up
    # A refresh abandoned half-way (its request cancelled) lets the next one refresh.
    now[0] += providers.DISCOVERY_TTL + 1
    abandoned = source.resolve()
    next(abandoned)
    abandoned.close()
    assert resolve(source) == up
    assert idp.requests.count("/.well-known/openid-configuration") == 3
    # So does one that was never closed, after REFRESH_ALONE.
    now[0] += providers.DISCOVERY_TTL + 1
    stuck = source.resolve()
    next(stuck)
    assert resolve(source) == up and idp.requests.count("/.well-known/openid-configuration") == 3
    now[0] += providers.REFRESH_ALONE
    assert resolve(source) == up
    assert idp.requests.count("/.well-known/openid-configuration") == 4


def test_discovery_refuses_another_issuer_and_bad_documents(idp: LocalIdP) -> None:
    # OIDC Discovery §4.3: the document must name the configured issuer exactly.
    other = providers.oidc(idp.url.replace("127.0.0.1", "localhost"), "cid", "secret")
    with pytest.raises(providers.UpstreamNotReady, match="another issuer"):
        resolve(other)
    idp.fault = "garbage"
    with pytest.raises(providers.UpstreamNotReady, match="not JSON"):
        resolve(providers.oidc(idp.url, "cid", "secret"))
    idp.stop()
    with pytest.raises(providers.UpstreamNotReady, match="no answer"):
        resolve(providers.oidc(idp.url, "cid", "secret"))


def test_presets() -> None:
    assert providers.google("cid", "s").issuer == "https://accounts.google.com"
    assert providers.auth0("acme.eu.auth0.com", "cid", "s").issuer == "https://acme.eu.auth0.com/"
    assert providers.auth0("acme.eu.auth0.com", "cid", "s").discovery_url == \
        "https://acme.eu.auth0.com/.well-known/openid-configuration"
    gh = resolve(providers.github("cid", "s"))
    assert gh.token_endpoint == "https://github.com/login/oauth/access_token" and gh.user_id_claim == "id"
    plain = resolve(providers.oauth2("https://a.example/auth", "https://a.example/token", "cid", "s",
                                     userinfo_endpoint="https://a.example/me", user_id_claim="uid"))
    assert plain.authorization_endpoint == "https://a.example/auth" and plain.user_id_claim == "uid"
    assert not plain.oidc
    with pytest.raises(providers.UpstreamNotReady, match="FOO"):
        resolve(providers.NotReady("environment variable FOO is not set"))


def test_google_is_asked_for_a_refresh_token_at_every_sign_in() -> None:
    """Google gives a refresh token only with access_type=offline, and only at
    a sign-in that showed its consent screen (prompt=consent): without one,
    the upstream token the server behind us asks for ends within the hour."""
    issuer = "https://accounts.google.com"
    doc = {"issuer": issuer, "authorization_endpoint": f"{issuer}/o/oauth2/v2/auth",
           "token_endpoint": "https://oauth2.googleapis.com/token",
           "userinfo_endpoint": "https://openidconnect.googleapis.com/v1/userinfo"}

    def perform(effect: Any) -> Any:
        assert isinstance(effect, Fetch) and effect.request.url == f"{issuer}/.well-known/openid-configuration"
        return HttpResponse(200, (("content-type", "application/json"),), json.dumps(doc).encode())

    google = run_sync(providers.google("cid", "s").resolve(), perform)
    assert dict(google.extra_authorize_params) == {"access_type": "offline", "prompt": "consent"}
