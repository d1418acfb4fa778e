"""Property tests: whatever arrives at any route, the answer is a well-formed
OAuth error or a correct answer, never an unhandled exception or a 500.

Each example builds a small world (registered clients, issued tokens, an
unredeemed code, a pending consent and a pending upstream login) so that
random requests can also carry real values and reach deep into the flows,
where the upstream then answers garbage or fails.

The explicit tests at the end pin the bugs this suite found outside the
validators, each with the input that found it.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import attrs
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mcp_oauth_proxy.core.effects import Audit, Effect, Fetch, FetchClientMetadata, Sleep, StoreEffect, run_sync
from mcp_oauth_proxy.core.errors import FetchFailed, StorageUnavailable
from mcp_oauth_proxy.core.flows.guard import Principal, guard
from mcp_oauth_proxy.core.http import HttpResponse, Request
from mcp_oauth_proxy.core.router import handle
from mcp_oauth_proxy.core.tenant import Tenant

from support import NOW, REDIRECT, UPSTREAM_ISSUER, VERIFIER, CHALLENGE, Harness, hidden_value, jwt, params_of, tenant

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

TENANTS = [
    tenant(),
    tenant("pathy", "https://auth.example.com/acme", "https://auth.example.com/acme/mcp"),
]
ENDPOINTS = ["register", "authorize", "consent", "callback", "token", "userinfo", "revoke", "introspect", "jwks",
             "connections"]
DOC_URL = "https://client.example.net/oauth/client.json"
REDIRECTS = (301, 302, 303, 307, 308)


def _paths(t: Tenant) -> list[str]:
    p = t.issuer_path
    return [f"{p}/oauth/{e}" for e in ENDPOINTS] + [
        f"/.well-known/oauth-authorization-server{p}",
        f"/.well-known/openid-configuration{p}",
        f"{p}/.well-known/openid-configuration",
        "/.well-known/oauth-protected-resource" + urlsplit(t.resource).path,
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-authorization-server",
        f"{p}/oauth/",
        f"{p}/oauth/token/",
        "/oauth/token",
        "/mcp",
        "/",
    ]


# -- the world each example starts from -------------------------------------------


def audit_text(audit: Audit) -> str:
    """An audit record as text, less the name a registering client chose for
    itself: that is the client's own words (it may pick any string, a test's
    secret included), not a credential we leaked."""
    return repr(attrs.evolve(audit, detail=tuple(d for d in audit.detail if d[0] != "client_name")))


@attrs.define
class World:
    h: Harness
    # Values a request may carry to get past the first checks.
    known: list[str]
    # Values whose use legitimately changes the store even when refused
    # (a code is single-use; a replayed refresh token revokes its family).
    consumable: list[str]
    # Credentials that must never appear in an audit record.
    secrets: list[str]
    cookie: str
    # A proper request to each endpoint (params, headers), for mutating.
    templates: dict[str, tuple[dict[str, Any], list[tuple[str, str]]]]


def build_world(t: Tenant) -> World:
    h = Harness(tenant=t)
    public = h.register()
    basic = h.register(token_endpoint_auth_method="client_secret_basic", application_type="web",
                       redirect_uris=["https://app.example.com/cb"])
    post = h.register(token_endpoint_auth_method="client_secret_post", redirect_uris=[REDIRECT])
    tokens = h.redeem(public["client_id"], h.login(public["client_id"])["code"]).json()
    code = h.login(public["client_id"])["code"]  # a public native client: asked again (RFC 8252 §8.6)
    # A sign-in to the connections page left pending (its state), and one finished: the page's form.
    connections = f"{t.issuer}/oauth/connections"
    pending_sign_in = params_of(h.request("GET", connections).header("location") or "")["state"]
    page = h.sign_in_to_connections()
    form_token, grant_id = hidden_value(page, "form_token"), hidden_value(page, "grant_id")
    # A pending upstream login (its state), of a client approved before that proves itself ...
    h.login(post["client_id"])
    upstream = params_of(h.request("GET", h.authorize_url(post["client_id"])).header("location") or "")
    # ... and a pending consent, shown to the same browser without its consent cookie.
    approved = dict(h.cookies)
    h.cookies = {k: v for k, v in approved.items() if "mcp_consent" not in k}
    page = h.request("GET", h.authorize_url(basic["client_id"], redirect_uri="https://app.example.com/cb"))
    request_id = h.consent_request_id(page)
    h.cookies.update(approved)
    cookie = "; ".join(f"{k}={v}" for k, v in h.cookies.items())
    h.cookies = {}  # requests below set their own Cookie headers
    secrets = [basic["client_secret"], post["client_secret"], tokens["access_token"], tokens["refresh_token"],
               code, upstream["state"], request_id, pending_sign_in, form_token]
    known = [
        public["client_id"], basic["client_id"], post["client_id"], DOC_URL, *secrets,
        REDIRECT, "http://127.0.0.1:5555/callback", "https://app.example.com/cb", t.resource, t.issuer,
        CHALLENGE, VERIFIER, "S256", "plain", "code", "token", "authorization_code", "refresh_token",
        "client_credentials", "mcp", "mcp mcp:admin", "openid", "approve", "deny", "access_token",
        "refresh_token", UPSTREAM_ISSUER, "upstream-code", "access_denied", "server_error",
        "temporarily_unavailable", "client-state", grant_id, "disconnect", "sign_out",
        # URLs read one way by Python and another by a browser or a person
        "http://evil.com\\@127.0.0.1:33418/callback", "https://\u0430\u0440\u0440\u04cf\u0435.com/cb",
        "https://u@app.example.com/cb", "https://app.example.net/caf\u00e9.json",
    ]
    basic_auth = "Basic " + _b64(f"{basic['client_id']}:{basic['client_secret']}")
    templates: dict[str, tuple[dict[str, Any], list[tuple[str, str]]]] = {
        "register": ({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "client_name": "Fuzz",
                      "grant_types": ["authorization_code", "refresh_token"], "application_type": "native",
                      "scope": "mcp"}, []),
        "authorize": (params_of(h.authorize_url(public["client_id"], scope="mcp")), [("cookie", cookie)]),
        "consent": ({"request_id": request_id, "decision": "approve"}, [("cookie", cookie)]),
        "callback": ({"state": upstream["state"], "code": "upstream-code", "iss": UPSTREAM_ISSUER},
                     [("cookie", cookie)]),
        "token": ({"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                   "code_verifier": VERIFIER, "client_id": public["client_id"], "resource": t.resource}, []),
        "refresh": ({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                     "client_id": public["client_id"], "scope": "mcp"}, []),
        "revoke": ({"token": tokens["access_token"], "client_id": public["client_id"]}, []),
        "introspect": ({"token": tokens["access_token"]}, [("authorization", basic_auth)]),
        "userinfo": ({}, [("authorization", "Bearer " + tokens["access_token"])]),
        "jwks": ({}, []),
        "connections": ({}, [("cookie", cookie)]),
        "disconnect": ({"form_token": form_token, "grant_id": grant_id, "action": "disconnect"}, [("cookie", cookie)]),
        "connections_callback": ({"state": pending_sign_in, "code": "upstream-code", "iss": UPSTREAM_ISSUER},
                                 [("cookie", cookie)]),
    }
    return World(h, known, [code, tokens["refresh_token"]], secrets, cookie, templates)


# -- strategies ---------------------------------------------------------------------

text = st.text(max_size=40)
JUNK = ["", " ", "\x00", "%", "%zz", "%ff", "%C3", "&", "=", "+", "#", "?", "é", "\u202e", "\r\n",
        "javascript:alert(1)", "https://evil.example/cb", "http://evil.example/cb", "a b", "a  b", '"', "\\",
        "null", "[]", "{}", "0", "-1", "99999999999999999999"]
NAMES = ["response_type", "client_id", "redirect_uri", "code_challenge", "code_challenge_method", "state",
         "scope", "resource", "grant_type", "code", "code_verifier", "refresh_token", "client_secret", "token",
         "token_type_hint", "request_id", "decision", "iss", "error", "error_description", "nonce", "prompt",
         "form_token", "grant_id", "action", "after", "disconnected"]
CONTENT_TYPES = ["application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8",
                 "APPLICATION/X-WWW-FORM-URLENCODED", "application/json", "application/json; charset=latin-1",
                 "text/plain", "multipart/form-data; boundary=x", "", ";", "application/x-www-form-urlencoded, text/html"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "get", "post"]
COOKIE_NAMES = ["__Host-mcp_consent_acme", "mcp_consent_acme", "__Host-mcp_browser", "mcp_browser", "session",
                "__Host-mcp_connections_acme", "__Host-mcp_connections_pathy"]


def values(world: World) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(world.known),
        st.sampled_from(JUNK),
        text,
        st.integers(1000, 20000).map(lambda n: "a" * n),  # huge-ish
        st.sampled_from(world.known).map(lambda v: v.upper()),
        st.sampled_from(world.known).map(lambda v: v + "x"),
    )


@st.composite
def query_strings(draw: Any, world: World) -> str:
    pairs = draw(st.lists(st.tuples(st.one_of(st.sampled_from(NAMES), text), values(world)), max_size=8))
    if pairs and draw(st.booleans()):
        pairs.append(draw(st.sampled_from(pairs)))  # a duplicate parameter
    parts = []
    for name, value in pairs:
        how = draw(st.sampled_from(["plus", "percent", "raw"]))
        if how == "plus":
            parts.append(f"{quote_plus(name)}={quote_plus(value)}")
        elif how == "percent":
            parts.append(f"{quote(name, safe='')}={quote(value, safe='')}")
        else:
            parts.append(f"{name}={value}")
    raw = "&".join(parts)
    return draw(st.one_of(st.just(raw), st.just(raw + "&" + draw(text)), text))


def _b64(text_value: str) -> str:
    return base64.b64encode(text_value.encode("utf-8", "surrogatepass")).decode()


@st.composite
def authorization_values(draw: Any, world: World) -> str:
    secret_like = st.one_of(st.sampled_from(world.known), text)
    return draw(st.one_of(
        st.builds(lambda v: "Bearer " + v, secret_like),
        st.builds(lambda a, b: "Basic " + _b64(f"{a}:{b}"), secret_like, secret_like),
        st.builds(lambda v: "Basic " + _b64(v), secret_like),
        st.builds(lambda v: "Basic " + v, text),
        st.sampled_from(["Bearer", "Bearer ", "Basic", "Basic =", "bearer mcp_at_", "DPoP x", "", "Bearer a b"]),
        text,
    ))


@st.composite
def cookie_values(draw: Any, world: World) -> str:
    jar = draw(st.lists(st.tuples(st.sampled_from(COOKIE_NAMES), st.one_of(
        text, text.map(lambda v: "e30." + v), st.sampled_from(world.known))), max_size=3))
    junk = "; ".join(f"{k}={v}" for k, v in jar)
    return draw(st.one_of(st.just(junk), st.just(world.cookie), st.just(world.cookie + "; " + junk), text))


json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text)
json_values = st.recursive(json_leaves, lambda c: st.one_of(st.lists(c, max_size=3),
                                                           st.dictionaries(text, c, max_size=3)), max_leaves=8)
REGISTER_KEYS = ["redirect_uris", "token_endpoint_auth_method", "grant_types", "response_types", "client_name",
                 "client_uri", "scope", "application_type", "client_id", "client_secret"]


@st.composite
def bodies(draw: Any, world: World) -> bytes:
    def register_doc() -> bytes:
        doc: dict[str, Any] = {}
        for key in draw(st.lists(st.sampled_from(REGISTER_KEYS), max_size=6)):
            doc[key] = draw(st.one_of(json_values, values(world), st.lists(values(world), max_size=3)))
        return json.dumps(doc).encode()

    return draw(st.one_of(
        st.just(b""),
        query_strings(world).map(lambda q: q.encode("utf-8")),
        st.binary(max_size=200),
        st.builds(lambda q, junk: q.encode() + junk, query_strings(world), st.sampled_from([b"\xff", b"\xc3", b"\x00"])),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.builds(lambda: register_doc()),
        st.sampled_from([b'{"a": "\\ud800"}', b'{"client_name": "\\udfff", "redirect_uris": ["https://a.example/cb"]}',
                         b"[" * 3000, b'{"a":' * 3000, b"\xef\xbb\xbf{}"]),
    ))


@st.composite
def headers_for(draw: Any, world: World) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for kind in draw(st.lists(st.sampled_from(["authorization", "cookie", "content-type", "origin", "other"]),
                              max_size=5)):
        if kind == "authorization":
            value = draw(authorization_values(world))
        elif kind == "cookie":
            value = draw(cookie_values(world))
        elif kind == "content-type":
            value = draw(st.one_of(st.sampled_from(CONTENT_TYPES), text))
        elif kind == "origin":
            value = draw(st.one_of(st.just("https://app.example"), st.just("null"), text))
        else:
            kind = draw(st.one_of(st.sampled_from(["x-forwarded-host", "host", "accept", "mcp-protocol-version"]), text))
            value = draw(text)
        headers.append((kind, value))
    return headers


# Upstream answers: the FakeIdP's proper one, a failure, or garbage.
def _idp_claims() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={
        "iss": st.sampled_from([UPSTREAM_ISSUER, "https://evil.example", 5]),
        "aud": st.sampled_from(["upstream-client", ["upstream-client", "x"], "x", None, {"a": 1}]),
        "exp": st.sampled_from([NOW + 600, NOW - 1, "soon", None, 1e300]),
        "sub": st.one_of(text, st.integers(), st.none()),
        "id": st.one_of(text, st.integers(), st.booleans()),
        "nonce": st.one_of(text, st.none()),
    })


garbage_json = st.fixed_dictionaries({}, optional={
    "access_token": st.one_of(text, st.integers(), st.none()),
    "refresh_token": st.one_of(text, st.integers(), st.none()),
    "expires_in": st.one_of(st.integers(-10, 10**12), text, st.floats(allow_nan=False)),
    "token_type": json_values,
    "scope": json_values,
    "error": st.one_of(st.sampled_from(["invalid_grant", "access_denied", "server_error"]), json_values),
    "id_token": st.one_of(text, _idp_claims().map(jwt), st.just("a.b.c"), st.just("a.!!!.c")),
    "sub": st.one_of(text, st.integers(), st.none()),
    "id": st.one_of(text, st.integers()),
    "client_id": st.sampled_from([DOC_URL, "x"]),
    "client_name": text,
    "redirect_uris": st.one_of(st.just([REDIRECT]), json_values),
}).map(lambda d: json.dumps(d).encode())

answers = st.one_of(
    st.just("ok"),
    st.just("fail"),
    st.builds(
        HttpResponse,
        status=st.sampled_from([200, 200, 200, 201, 204, 302, 400, 401, 404, 429, 500, 503]),
        headers=st.sampled_from([(("content-type", "application/json"),), (), (("content-type", "text/html"),)]),
        body=st.one_of(garbage_json, json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=100),
                       st.sampled_from([b"", b"[" * 5000, b'{"a":' * 3000, b'{"sub": "\\ud800", "id": "\\udfff"}',
                                        b'{"access_token": "a", "id_token": "e30.' + b"W1tb" * 1500 + b'.c2ln"}'])),
    ),
)


@attrs.define
class Upstream:
    """Answers Fetch and FetchClientMetadata from a script; records audits;
    fails the ``fail_store_at``-th store call if asked."""

    world: World
    script: list[Any]
    fail_store_at: int | None
    audits: list[Audit] = attrs.Factory(list)
    store_calls: int = 0
    fetches: int = 0

    def _answer(self) -> Any:
        answer = self.script[self.fetches % len(self.script)] if self.script else "fail"
        self.fetches += 1
        return answer

    def __call__(self, effect: Effect) -> Any:
        if isinstance(effect, StoreEffect):
            self.store_calls += 1
            if self.fail_store_at is not None and self.store_calls - 1 == self.fail_store_at:
                raise StorageUnavailable("injected")
            return effect.apply(self.world.h.store)
        if isinstance(effect, Audit):
            self.audits.append(effect)
            return None
        if isinstance(effect, Sleep):
            return None
        if isinstance(effect, (Fetch, FetchClientMetadata)):
            answer = self._answer()
            if answer == "fail":
                raise FetchFailed("injected")
            if answer == "ok":
                if isinstance(effect, Fetch):
                    return self.world.h.idp(effect.request)
                doc = {"client_id": effect.url, "client_name": "Doc", "redirect_uris": [REDIRECT]}
                return HttpResponse(200, (("content-type", "application/json"),), json.dumps(doc).encode())
            return answer
        raise TypeError(f"an effect the property test does not know: {effect!r}")


# -- what every response must look like ------------------------------------------


def check_response(response: Any, request: Request) -> None:
    assert response.status < 500 or response.status in (502, 503), (response.status, response.body[:300])
    for name, value in response.headers:
        # Nothing from the request may split a header (RFC 9110 §5.5).
        assert not any(c in value for c in "\r\n\x00"), (name, value)
    content_type = (response.header("content-type") or "").lower()
    if content_type.startswith("application/json"):
        doc = json.loads(response.body)
        challenge = response.header("www-authenticate") or ""
        if response.status == 401 and challenge.startswith("Bearer ") and "error=" not in challenge:
            # RFC 6750 §3.1: only a request without credentials, and it is told no error code.
            assert request.header("authorization") is None and doc == {}, doc
        elif response.status >= 400:
            assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], doc
            assert isinstance(doc.get("error_description", ""), str)
    elif content_type.startswith("text/html"):
        # Clickjacking (RFC 9700 §4.16): every page forbids framing.
        assert response.header("x-frame-options") == "DENY"
        assert "frame-ancestors 'none'" in (response.header("content-security-policy") or "")
        response.body.decode("utf-8")
    elif response.status in REDIRECTS:
        assert response.header("location"), response
        assert response.status not in (307, 308)  # RFC 9700 §4.11: never re-POST the form
    elif response.status == 204:
        assert request.method == "OPTIONS" and response.body == b""
    else:
        # Revocation answers 200 with an empty body (RFC 7009 §2.2).
        assert response.status == 200 and response.body == b"", response
    if response.status >= 400:
        assert content_type.startswith(("application/json", "text/html")), response
    if response.status == 401:
        # RFC 9110 §15.5.2, RFC 6749 §5.2, RFC 6750 §3.
        assert response.header("www-authenticate"), response


def weighted(usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` nine times in ten."""
    return st.integers(0, 9).flatmap(lambda n: rare if n == 5 else usual)


def send(world: World, upstream: Upstream, request: Request) -> Any:
    return run_sync(handle(request, world.h.ctx()), upstream)


@SETTINGS
@given(data=st.data(), t=st.sampled_from(TENANTS))
def test_any_request_gets_a_well_formed_answer(data: Any, t: Tenant) -> None:
    world = build_world(t)
    path = data.draw(weighted(st.sampled_from(_paths(t)), st.one_of(text.map(lambda s: "/" + s), text)), label="path")
    method = data.draw(weighted(st.sampled_from(["GET", "POST", "OPTIONS"]),
                                st.one_of(st.sampled_from(METHODS), st.text(min_size=1, max_size=8))), label="method")
    request = Request(
        method, path,
        query=data.draw(query_strings(world), label="query"),
        headers=tuple(data.draw(headers_for(world), label="headers")),
        body=data.draw(bodies(world), label="body"),
        scheme="https",
        host=t.issuer.split("/")[2],
    )
    upstream = Upstream(world, data.draw(st.lists(answers, max_size=3), label="upstream"),
                        data.draw(st.one_of(st.none(), st.integers(0, 6)), label="fail_store_at"))
    before = world.h.store.dump()
    response = send(world, upstream, request)
    event(f"{method if method in METHODS else '?'} {path if path in _paths(t) else '?'} -> {response.status}")
    check_response(response, request)
    for audit in upstream.audits:
        # Audit records never carry a credential (effects.Audit).
        assert not any(s in audit_text(audit) for s in world.secrets), audit
    # A refused registration or token request changes nothing, unless it
    # presented a single-use value (RFC 6749 §4.1.2, RFC 9700 §4.14.2).
    endpoint = path.rsplit("/", 1)[-1]
    if 400 <= response.status < 500 and path.startswith(t.issuer_path + "/oauth/"):
        if endpoint == "register" or (
            endpoint == "token" and not any(v in request.body.decode("latin-1") for v in world.consumable)
        ):
            assert world.h.store.dump() == before, (response.status, response.body)


@st.composite
def mutated(draw: Any, world: World, template: tuple[dict[str, Any], list[tuple[str, str]]]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A proper request, then some parameters and headers dropped, replaced
    or added: most checks pass, one or two fail."""
    params, headers = template
    out: dict[str, Any] = {}
    for key, value in params.items():
        fate = draw(st.integers(0, 9))
        if fate == 0:
            continue  # dropped
        out[key] = draw(values(world)) if fate <= 2 else value
    out.update(draw(st.dictionaries(st.sampled_from(NAMES), values(world), max_size=2)))
    kept = []
    for name, value in headers:
        fate = draw(st.integers(0, 9))
        if fate == 0:
            continue
        if fate <= 3:
            value = draw(cookie_values(world) if name == "cookie" else authorization_values(world))
        kept.append((name, value))
    return out, kept + draw(st.one_of(st.just([]), headers_for(world)))


ROUTES = [("POST", "register", "register"), ("GET", "authorize", "authorize"), ("POST", "authorize", "authorize"),
          ("POST", "consent", "consent"), ("GET", "callback", "callback"), ("POST", "token", "token"),
          ("POST", "token", "refresh"), ("GET", "userinfo", "userinfo"), ("POST", "userinfo", "userinfo"),
          ("POST", "revoke", "revoke"), ("POST", "introspect", "introspect"), ("GET", "jwks", "jwks"),
          ("OPTIONS", "token", "token"), ("DELETE", "token", "token"), ("GET", "connections", "connections"),
          ("POST", "connections", "disconnect"), ("GET", "callback", "connections_callback")]


@pytest.mark.parametrize("method, endpoint, template", ROUTES)
@settings(SETTINGS, max_examples=40)
@given(data=st.data())
def test_every_route_with_mutated_proper_requests(data: Any, method: str, endpoint: str, template: str) -> None:
    """Pinned to each OAuth route: a proper request with a few parts broken,
    and the upstream answering garbage, so the flows' deep paths are reached."""
    t = TENANTS[0]
    world = build_world(t)
    pairs, headers = data.draw(mutated(world, world.templates[template]))
    if endpoint == "register":
        body, query = json.dumps(pairs).encode(), ""
        headers.insert(0, ("content-type", "application/json"))
    else:
        flat = [(k, v) for k, vs in pairs.items() for v in (vs if isinstance(vs, list) else [vs])]
        query = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in flat)
        body = query.encode() if method == "POST" else b""
        query = query if method == "GET" else ""
        headers.insert(0, ("content-type", "application/x-www-form-urlencoded"))
    request = Request(method, f"/oauth/{endpoint}", query=query, headers=tuple(headers), body=body,
                      host="acme.example.com")
    upstream = Upstream(world, data.draw(st.lists(answers, max_size=3)),
                        data.draw(weighted(st.none(), st.integers(0, 4))))
    before = world.h.store.dump()
    response = send(world, upstream, request)
    event(f"{method} {template} -> {response.status} {response.body[:40]!r}")
    check_response(response, request)
    for audit in upstream.audits:
        assert not any(s in audit_text(audit) for s in world.secrets), audit
    if endpoint in ("register", "token") and 400 <= response.status < 500:
        if not any(v in flat_values(pairs) for v in world.consumable):
            assert world.h.store.dump() == before, (response.status, response.body)


def flat_values(pairs: dict[str, Any]) -> list[Any]:
    return [v for vs in pairs.values() for v in (vs if isinstance(vs, list) else [vs])]


@SETTINGS
@given(data=st.data())
def test_callback_with_a_real_state_and_a_garbage_upstream(data: Any) -> None:
    """The one path where the upstream's answer decides: a valid state, then
    whatever the IdP says. The client gets a redirect with ``iss`` or an
    error page; never an exception."""
    world = build_world(TENANTS[0])
    params = {"state": _state(world), "code": "upstream-code", "iss": UPSTREAM_ISSUER}
    # Usually the upstream's redirect is proper and its token answer decides.
    params.update(data.draw(weighted(st.just({}), st.dictionaries(
        st.sampled_from(["code", "iss", "error", "error_description"]), values(world), max_size=3))))
    query = "&".join(f"{k}={quote_plus(v)}" for k, v in params.items())
    request = Request("GET", "/oauth/callback", query=query, host="acme.example.com")
    upstream = Upstream(world, data.draw(st.lists(answers, min_size=1, max_size=3)), None)
    response = send(world, upstream, request)
    event(f"callback -> {response.status} {params_of(response.header('location') or '').get('error', '')}")
    check_response(response, request)
    if response.status in REDIRECTS:
        params = params_of(response.header("location"))
        assert params.get("iss") == TENANTS[0].issuer  # RFC 9207 §2
        assert params.get("state") == "client-state"
        assert ("code" in params) != ("error" in params)


def _state(world: World) -> str:
    return world.secrets[5]  # the pending upstream login's state


# -- the guard ----------------------------------------------------------------------


@SETTINGS
@given(token=st.binary(max_size=300), prefix=st.sampled_from(["", "mcp_at_", "mcp_rt_", "mcp_code_"]),
       scheme=st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "DPoP", ""]))
def test_guard_refuses_random_bearer_tokens(token: bytes, prefix: str, scheme: str) -> None:
    """Random bytes (as an adapter decodes header bytes: latin-1) are never a
    principal: 401 with a challenge naming our metadata (RFC 6750 §3,
    RFC 9728 §5.1)."""
    h = Harness()
    value = f"{scheme} {prefix}{token.decode('latin-1')}".strip()
    request = Request("POST", "/mcp", headers=(("authorization", value),), host="acme.example.com")
    result = run_sync(guard(request, h.ctx()), h.perform())
    assert not isinstance(result, Principal)
    assert result.status == 401
    challenge = result.header("www-authenticate")
    assert challenge.startswith("Bearer ")
    assert 'resource_metadata="https://acme.example.com/.well-known/oauth-protected-resource/mcp"' in challenge
    assert "\r" not in challenge and "\n" not in challenge
    assert result.json()["error"] == "invalid_token"


@SETTINGS
@given(junk=st.binary(min_size=1, max_size=40))
def test_guard_refuses_a_real_token_with_junk(junk: bytes) -> None:
    h = Harness()
    _, tokens = h.tokens()
    request = Request("GET", "/mcp", headers=(("authorization", "Bearer " + tokens["access_token"] + junk.decode("latin-1")),))
    result = run_sync(guard(request, h.ctx()), h.perform())
    # Trailing whitespace is not part of the token; anything else is another token.
    if junk.decode("latin-1").strip():
        assert not isinstance(result, Principal) and result.status == 401
    request = Request("GET", "/mcp", headers=(("authorization", "Bearer " + tokens["access_token"]),))
    assert isinstance(run_sync(guard(request, h.ctx()), h.perform()), Principal)


# -- regressions: inputs that once escaped as exceptions --------------------------


def _one(world: World, request: Request, script: list[Any]) -> Any:
    upstream = Upstream(world, script, None)
    response = send(world, upstream, request)
    check_response(response, request)
    return response


def test_basic_credentials_with_non_ascii():
    """client_auth._basic: b64decode(str) raised ValueError for non-ASCII."""
    world = build_world(TENANTS[0])
    request = Request("POST", "/oauth/token", headers=(("authorization", "Basic é"),
                                                       ("content-type", "application/x-www-form-urlencoded")),
                      body=b"grant_type=refresh_token&refresh_token=x", host="acme.example.com")
    assert _one(world, request, []).status == 401


def test_consent_cookie_with_non_ascii_signature():
    """cookies._approvals: compare_digest raised TypeError on non-ASCII str."""
    world = build_world(TENANTS[0])
    client_id = world.known[0]
    query = world.h.authorize_url(client_id).split("?", 1)[1]
    request = Request("GET", "/oauth/authorize", query=query,
                      headers=(("cookie", "__Host-mcp_consent_acme=e30.é"),), host="acme.example.com")
    assert _one(world, request, []).status == 200


def test_invalid_client_401_without_challenge():
    """No client authentication at all: a 401 still names a scheme (RFC 9110 §15.5.2)."""
    world = build_world(TENANTS[0])
    request = Request("POST", "/oauth/token", headers=(("content-type", "application/x-www-form-urlencoded"),),
                      body=b"grant_type=authorization_code&code=x", host="acme.example.com")
    response = _one(world, request, [])
    assert response.status != 401 or response.header("www-authenticate")


def _callback_request(world: World) -> Request:
    return Request("GET", "/oauth/callback", query=f"state={_state(world)}&code=c&iss={quote_plus(UPSTREAM_ISSUER)}",
                   headers=(("cookie", world.cookie),), host="acme.example.com")


def test_upstream_deeply_nested_json():
    """upstream._json_object: RecursionError escaped from json.loads."""
    world = build_world(TENANTS[0])
    deep = HttpResponse(200, (("content-type", "application/json"),), b"[" * 100000)
    assert _one(world, _callback_request(world), [deep]).status in (302, 502)


def test_upstream_id_token_deeply_nested():
    """upstream.id_token_claims: the same, inside the id_token."""
    world = build_world(TENANTS[0])
    payload = base64.urlsafe_b64encode(b"[" * 100000).rstrip(b"=").decode()
    body = json.dumps({"access_token": "a", "id_token": f"e30.{payload}.c2ln"}).encode()
    answer = HttpResponse(200, (("content-type", "application/json"),), body)
    assert _one(world, _callback_request(world), [answer]).status in (302, 502)


def test_client_metadata_document_deeply_nested():
    """cimd._document: the same, in a client metadata document."""
    world = build_world(TENANTS[0])
    query = world.h.authorize_url(DOC_URL).split("?", 1)[1]
    doc = HttpResponse(200, (("content-type", "application/json"),), b"[" * 5000)
    assert _one(world, Request("GET", "/oauth/authorize", query=query, host="acme.example.com"), [doc]).status == 400


def test_upstream_claims_with_lone_surrogate():
    """Upstream claims with "\\ud800" were kept, then /oauth/userinfo could not encode them."""
    world = build_world(TENANTS[0])
    # Log in again with an upstream whose userinfo carries a lone surrogate.
    h = world.h
    h.idp.fail = lambda r: (HttpResponse(200, (("content-type", "application/json"),),
                                         b'{"sub": "user-42", "name": "\\ud800"}') if r.url.endswith("/userinfo") else None)
    client = h.register()
    tokens = h.redeem(client["client_id"], h.login(client["client_id"])["code"]).json()
    h.idp.fail = lambda r: HttpResponse(500, (), b"") if r.url.endswith("/userinfo") else None
    request = Request("GET", "/oauth/userinfo", headers=(("authorization", "Bearer " + tokens["access_token"]),),
                      host="acme.example.com")
    response = run_sync(handle(request, h.ctx()), h.perform())
    check_response(response, request)


def test_client_metadata_document_with_lone_surrogate_is_refused():
    """Fixed in register.validate, which documents go through too."""
    world = build_world(TENANTS[0])
    query = world.h.authorize_url(DOC_URL).split("?", 1)[1]
    doc = HttpResponse(200, (("content-type", "application/json"),),
                       json.dumps({"client_id": DOC_URL, "client_name": "x", "redirect_uris": [REDIRECT]})
                       .replace('"x"', '"\\ud800"').encode())
    response = _one(world, Request("GET", "/oauth/authorize", query=query, host="acme.example.com"), [doc])
    assert response.status == 400 and response.header("location") is None
