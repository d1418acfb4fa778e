"""ResolveUpstream: a tenant whose upstream is known only outside the core
(Tenant.upstream None) has it asked for by the routes that talk to the
upstream, and only by them, before anything else; a failure is the 503
those routes answered before the effect existed."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from support import ISSUER, Harness, context, tenant, upstream
from mcp_oauth_proxy.core.effects import Effect, ResolveUpstream, run_sync
from mcp_oauth_proxy.core.errors import UpstreamNotReady
from mcp_oauth_proxy.core.flows.guard import Principal, guard
from mcp_oauth_proxy.core.http import Request
from mcp_oauth_proxy.core.router import handle
from mcp_oauth_proxy.core.upstream import with_upstream


def resolving(h: Harness, answer: Callable[[], Any]) -> list[str]:
    """Runs ``h``'s flows with ResolveUpstream answered by ``answer``; the
    slugs asked for, in order."""
    asked: list[str] = []

    def driver(flow: Any) -> Any:
        perform = h.perform()

        def perform_resolving(effect: Effect) -> Any:
            if isinstance(effect, ResolveUpstream):
                asked.append(effect.tenant)
                return answer()
            return perform(effect)

        return run_sync(flow, perform_resolving)

    h.driver = driver
    return asked


def test_only_the_routes_that_talk_to_the_upstream_ask_for_it():
    h = Harness(tenant=tenant(upstream=None))
    asked = resolving(h, upstream)

    def asks(step: Callable[[], Any]) -> int:
        before = len(asked)
        step()
        return len(asked) - before

    assert asks(lambda: h.request("GET", f"{ISSUER}/.well-known/oauth-authorization-server")) == 0
    assert asks(lambda: h.request("GET", f"{ISSUER}/.well-known/oauth-protected-resource/mcp")) == 0
    assert asks(lambda: h.request("GET", f"{ISSUER}/oauth/jwks")) == 0
    client: dict[str, Any] = {}
    assert asks(lambda: client.update(h.register())) == 0
    params: dict[str, str] = {}
    assert asks(lambda: params.update(h.login(client["client_id"]))) == 3  # authorize, consent, callback
    tokens: dict[str, Any] = {}
    assert asks(lambda: tokens.update(h.redeem(client["client_id"], params["code"]).json())) == 0
    assert asks(lambda: isinstance(h.guard(tokens["access_token"]), Principal)) == 0
    assert isinstance(h.guard(tokens["access_token"]), Principal)
    userinfo = h.request("GET", f"{ISSUER}/oauth/userinfo", headers=[("authorization", f"Bearer {tokens['access_token']}")])
    assert userinfo.status == 200 and userinfo.json()["sub"] == "user-42"
    assert asks(lambda: h.request("OPTIONS", f"{ISSUER}/oauth/userinfo")) == 0  # a preflight
    h.now += 120
    assert asks(lambda: h.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                                 "client_id": client["client_id"]})) == 0
    assert asks(lambda: h.request("POST", f"{ISSUER}/oauth/introspect", form={"token": "x"})) == 0
    assert asks(lambda: h.request("POST", f"{ISSUER}/oauth/revoke",
                                  form={"token": tokens["refresh_token"], "client_id": client["client_id"]})) == 0
    assert set(asked) == {"acme"} and len(asked) == 4  # and once for userinfo


def test_a_known_upstream_is_not_asked_for():
    h = Harness()  # the tenant's upstream given
    asked = resolving(h, upstream)
    h.tokens()
    assert asked == []


def _not_ready() -> Any:
    raise UpstreamNotReady("discovery of https://idp.example.org failed: HTTP 500")


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/oauth/authorize?client_id=x"),
    ("POST", "/oauth/consent"),
    ("GET", "/oauth/callback?state=s&code=c"),
    ("PUT", "/oauth/authorize"),  # before the method is looked at, as before anything else
])
def test_an_upstream_not_ready_is_a_503_page_on_browser_routes(method: str, path: str):
    h = Harness(tenant=tenant(upstream=None))
    resolving(h, _not_ready)
    page = h.request(method, ISSUER + path)
    assert page.status == 503 and (page.header("content-type") or "").startswith("text/html")
    text = page.body.decode()
    assert "Temporarily unavailable" in text and "the identity provider is not available" in text
    assert "idp.example.org" not in text and "HTTP 500" not in text
    assert h.store.dump() == Harness().store.dump()  # asked before the rate limit counts


def test_an_upstream_not_ready_is_json_with_retry_after_at_userinfo():
    h = Harness(tenant=tenant(upstream=None))
    resolving(h, _not_ready)
    answer = h.request("GET", f"{ISSUER}/oauth/userinfo", headers=[("authorization", "Bearer mcp_at_x")])
    assert answer.status == 503 and answer.header("retry-after") == "30"
    assert answer.json() == {"error": "temporarily_unavailable",
                             "error_description": "the identity provider is not available at the moment; try again later"}
    assert h.store.dump() == Harness().store.dump()


def test_with_upstream_asks_by_slug_and_fills_the_context_in():
    ctx = context(tenant(slug="beta", upstream=None))
    flow = with_upstream(ctx)
    assert next(flow) == ResolveUpstream("beta")
    with pytest.raises(StopIteration) as done:
        flow.send(upstream())
    assert done.value.value.upstream == upstream() and done.value.value.tenant.slug == "beta"
    # A failure reaches the caller as it is.
    flow = with_upstream(ctx)
    next(flow)
    with pytest.raises(UpstreamNotReady):
        flow.throw(UpstreamNotReady("down"))


def test_the_guard_never_asks():
    def never(effect: Effect) -> Any:
        assert not isinstance(effect, ResolveUpstream)
        return None  # no such token

    t = tenant(upstream=None)
    for authorization in ((), (("authorization", "Bearer mcp_at_unknown"),)):
        answer = run_sync(guard(Request("GET", "/mcp", headers=authorization), context(t)), never)
        assert answer.status == 401
    answer = run_sync(handle(Request("GET", "/.well-known/oauth-protected-resource/mcp"), context(t)), never)
    assert answer.status == 200
