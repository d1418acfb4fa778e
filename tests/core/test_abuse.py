"""Standing up to abuse in the core: rate limits (429 + Retry-After, counted
in the store so replicas share them) and registrations that lapse."""

from __future__ import annotations

import hashlib

from support import ISSUER, Harness, tenant
from mcp_oauth_proxy.core.tenant import Policy, RateLimit, RateLimits, ResourceServer


def _limited(**limits: RateLimit) -> Harness:
    return Harness(tenant=tenant(rate_limits=RateLimits(**limits)))


def _register(h: Harness, addr: str):
    h.remote_addr = addr
    return h.request("POST", f"{ISSUER}/oauth/register", json_body={"redirect_uris": ["http://127.0.0.1/cb"],
                                                                    "token_endpoint_auth_method": "none"})


def test_registrations_per_address_are_capped_then_recover():
    h = _limited(register=RateLimit(per_address=2, window=3600))
    assert _register(h, "198.51.100.7").status == 201
    assert _register(h, "198.51.100.7").status == 201
    over = _register(h, "198.51.100.7")
    assert over.status == 429
    assert over.json()["error"] == "temporarily_unavailable"
    assert int(over.header("retry-after")) == 3600 - h.now % 3600
    # Another address is not affected; the same one recovers in the next window.
    assert _register(h, "198.51.100.8").status == 201
    h.now += int(over.header("retry-after"))
    assert _register(h, "198.51.100.7").status == 201


def test_token_endpoint_limits_refreshes_per_grant():
    h = _limited(token=RateLimit(per_grant=2, window=60))
    client, tokens = h.tokens()  # one token request, not a refresh
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client["client_id"]}
    first = h.token(form)
    assert first.status == 200
    form["refresh_token"] = first.json()["refresh_token"]
    second = h.token(form)
    assert second.status == 200
    form["refresh_token"] = second.json()["refresh_token"]
    over = h.token(form)
    assert over.status == 429 and over.header("retry-after")
    assert over.header("cache-control") == "no-store"
    # A refused request changed nothing: the refresh token still works next window.
    h.now += 60
    assert h.token(form).status == 200


def test_code_exchanges_are_limited_per_client_at_one_address():
    h = _limited(token=RateLimit(per_client=1, window=60))
    client = h.register()
    h.remote_addr = "198.51.100.7"
    assert h.redeem(client["client_id"], "guess-1").status == 400
    assert h.redeem(client["client_id"], "guess-2").status == 429
    h.remote_addr = "198.51.100.8"
    assert h.redeem(client["client_id"], "guess-3").status == 400


def test_resource_servers_are_not_counted_at_introspection_but_failed_attempts_are():
    secret = "rs-secret-value"
    server = ResourceServer("mcp-server", hashlib.sha256(secret.encode()).hexdigest())
    h = Harness(tenant=tenant(resource_servers=(server,), rate_limits=RateLimits(introspect=RateLimit(per_address=2))))
    h.remote_addr = "192.0.2.10"

    def introspect(client_secret: str) -> int:
        return h.request("POST", f"{ISSUER}/oauth/introspect",
                         form={"token": "mcp_at_x", "client_id": "mcp-server", "client_secret": client_secret}).status

    assert [introspect(secret) for _ in range(5)] == [200] * 5
    assert [introspect("wrong") for _ in range(3)] == [401, 401, 429]
    assert introspect(secret) == 200


def test_authorize_over_the_limit_is_an_html_page_with_retry_after():
    h = _limited(authorize=RateLimit(per_address=1, window=60))
    client = h.register()
    h.remote_addr = "203.0.113.9"
    assert h.request("GET", h.authorize_url(client["client_id"])).status == 200
    page = h.request("GET", h.authorize_url(client["client_id"]))
    assert page.status == 429 and page.header("retry-after")
    assert page.header("content-type").startswith("text/html") and page.header("location") is None


def test_callback_is_limited_per_address():
    h = _limited(callback=RateLimit(per_address=1, window=60))
    h.remote_addr = "203.0.113.10"
    h.request("GET", f"{ISSUER}/oauth/callback?state=x")
    assert h.request("GET", f"{ISSUER}/oauth/callback?state=x").status == 429


def test_requests_without_a_known_address_are_not_counted_per_address():
    h = _limited(register=RateLimit(per_address=1, window=3600))
    assert _register(h, "").status == 201
    assert _register(h, "").status == 201


def test_limits_are_counted_in_the_store_shared_by_replicas():
    """Two harnesses (two replicas) on one store count together."""
    a = _limited(register=RateLimit(per_address=1, window=3600))
    b = Harness(tenant=a.tenant, store=a.store)
    assert _register(a, "192.0.2.1").status == 201
    assert _register(b, "192.0.2.1").status == 429


def test_a_registration_that_never_completes_an_authorization_lapses_and_is_collected():
    h = Harness(tenant=tenant(policy=Policy(unused_client_ttl=3600)))
    idle = h.register()
    used, _ = h.tokens(token_endpoint_auth_method="client_secret_post")
    h.now += 3600
    assert h.request("GET", h.authorize_url(idle["client_id"])).status == 400
    assert h.request("GET", h.authorize_url(used["client_id"])).status == 302  # consent remembered
    assert h.store.delete_expired(h.now) >= 1
    assert h.store.get_client("acme", idle["client_id"]) is None
    assert h.store.get_client("acme", used["client_id"]) is not None


def test_consent_answers_are_limited_per_address():
    # A second review: each answer at /oauth/consent is a 90-day audit
    # event, written without any sign-in, and /oauth/consent counted none.
    h = _limited(consent=RateLimit(per_address=1, window=60))
    client = h.register()
    h.remote_addr = "203.0.113.11"
    pages = [h.request("GET", h.authorize_url(client["client_id"])) for _ in range(2)]
    answers = [h.request("POST", f"{ISSUER}/oauth/consent",
                         form={"request_id": h.consent_request_id(page), "decision": "deny"}) for page in pages]
    assert [a.status for a in answers] == [303, 429]
    assert answers[1].header("content-type").startswith("text/html") and answers[1].header("retry-after")
