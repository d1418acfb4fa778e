"""Thousands of malformed and hostile requests, sent as raw ASGI messages to
the real app (OAuth endpoints and the guarded resource): wrong methods, huge
and broken bodies, duplicate parameters, bad encodings, header injection
attempts, unicode everywhere. Never a 5xx of ours, every error well formed,
and the store unchanged by every rejected request."""

from __future__ import annotations

import json
from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from local_idp import LocalIdP
from oauth_walk import drive_async, login, redeem, register
from proxy_apps import asgi_app, site

import httpx

PATHS = [
    "/oauth/register", "/oauth/authorize", "/oauth/consent", "/oauth/callback", "/oauth/token",
    "/oauth/userinfo", "/oauth/revoke", "/oauth/introspect", "/oauth/jwks", "/mcp",
    "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration",
    "/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp",
    # aimed past the protected path, or read two ways
    "/mcp/../oauth/token", "/mcp/%2e%2e/admin", "/mcp/a%2fb", "/mcp\\..\\x", "/mcp/./x", "/mcp/%252e%252e",
    "/oauth/../mcp", "/oauth/%2e%2e/mcp",
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "G\u00c9T", ""]
PARAMS = ["client_id", "redirect_uri", "response_type", "code_challenge", "code_challenge_method", "state",
          "scope", "resource", "grant_type", "code", "code_verifier", "refresh_token", "token",
          "token_type_hint", "request_id", "decision", "iss", "error", "client_secret"]

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
junk_bytes = st.binary(max_size=60)
hostile_values = st.one_of(
    text,
    st.sampled_from(["javascript:alert(1)", "http://evil.example/cb", "%00", "%ff%fe", "a\r\nSet-Cookie: x=y",
                     "mcp_at_" + "A" * 43, "mcp_rt_x", "mcp_code_x", "S256", "plain", "code",
                     "<script>alert(1)</script>", "\u202e\u0000", "x" * 5000,
                     # URLs read one way by Python and another by a browser or a person
                     "http://evil.com\\@127.0.0.1/cb", "https://trusted.example@evil.example/cb",
                     "https://\u0430\u0440\u0440\u04cf\u0435.com/cb", "https://app.example.com/caf\u00e9",
                     "https://\u0430\u0440\u0440\u04cf\u0435.com/client.json", "http://127.0.0.1:1/cb\\x"]),
)


@st.composite
def query(draw: Any) -> bytes:
    pairs = draw(st.lists(st.tuples(st.sampled_from(PARAMS) | text, hostile_values), max_size=8))
    encoded = "&".join(f"{httpx.QueryParams({k: v})}" for k, v in pairs).encode()
    return draw(st.sampled_from([encoded, encoded + b"&" + encoded, b"%zz&%e0%80=1", encoded]) | junk_bytes)


@st.composite
def headers(draw: Any) -> list[tuple[bytes, bytes]]:
    out = [(b"host", draw(st.sampled_from([b"acme.test", b"ACME.TEST:80", b"acme.test\r\nx: y", b"evil.test"])))]
    choices = st.sampled_from([
        (b"content-type", b"application/x-www-form-urlencoded"), (b"content-type", b"application/json"),
        (b"content-type", b"text/plain; charset=utf-7"), (b"authorization", b"Bearer mcp_at_forged"),
        (b"authorization", b"Basic \xff\xfe"), (b"authorization", b"Basic Og=="), (b"authorization", b"Bearer"),
        (b"cookie", b"__Host-mcp_browser=\xc3\xa9; mcp_consent_acme=a.b.c"), (b"x-forwarded-host", b"globex.test"),
        (b"content-length", b"99999999999"), (b"content-length", b"-1"), (b"origin", b"https://evil.example"),
        (b"x-injected", b"a\r\nb"),
        # identity and origin headers in other spellings, and framing told two ways
        (b"x_mcp_user", b"admin"), (b"X_MCP_Scopes", b"admin"), (b"x_forwarded_for", b"10.0.0.1"),
        (b"x_forwarded_host", b"globex.test"), (b"x_real_ip", b"10.0.0.1"), (b"transfer-encoding", b"chunked"),
        (b"content-length", b"5"),
    ])
    out += draw(st.lists(choices | st.tuples(st.binary(min_size=1, max_size=20), junk_bytes), max_size=6))
    return out


@st.composite
def body(draw: Any) -> bytes:
    return draw(st.one_of(
        junk_bytes,
        st.builds(lambda q: q, query()),
        st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(st.sampled_from(
            ["redirect_uris", "client_name", "grant_types", "token_endpoint_auth_method", "scope",
             "application_type", "response_types"]), st.one_of(hostile_values, st.lists(hostile_values, max_size=3),
                                                                st.integers(), st.none()), max_size=6)),
        st.just(b"[" * 3000), st.just(b'{"redirect_uris": ["\\ud800"]}'), st.just(b"x" * 200_000),
    ))


requests = st.lists(st.tuples(st.sampled_from(METHODS), st.sampled_from(PATHS) | text.map(lambda t: "/" + t),
                              query(), headers(), body()), min_size=1, max_size=12)


async def call(app: Any, method: str, path: str, qs: bytes, hdrs: list[tuple[bytes, bytes]], data: bytes) -> dict:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode("utf-8", "surrogatepass"), "query_string": qs,
             "root_path": "", "headers": hdrs, "client": ("198.51.100.20", 4242), "server": ("acme.test", 80)}
    chunks = [data[i:i + 65536] for i in range(0, len(data), 65536)] or [b""]
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return {"status": start["status"], "headers": [(k.lower(), v) for k, v in start.get("headers", [])],
            "body": b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")}


def check(response: dict) -> None:
    status, hdrs, data = response["status"], dict(response["headers"]), response["body"]
    assert status < 500 or status in (502, 503), (status, data[:300])
    for name, value in response["headers"]:
        assert b"\r" not in value and b"\n" not in value, (name, value)
    content_type = hdrs.get(b"content-type", b"")
    if status >= 400:
        if content_type.startswith(b"application/json"):
            doc = json.loads(data)
            challenge = hdrs.get(b"www-authenticate", b"")
            if status == 401 and challenge.startswith(b"Bearer ") and b"error=" not in challenge:
                assert doc == {}  # RFC 6750 §3.1: no credentials, no error code
            else:
                assert isinstance(doc.get("error"), str) and doc["error"], doc
        else:
            assert content_type.startswith(b"text/html"), (status, hdrs)
            assert hdrs.get(b"x-frame-options") == b"DENY"
            assert b"frame-ancestors 'none'" in hdrs.get(b"content-security-policy", b"")
    if status in (301, 302, 303, 307, 308):
        assert status in (302, 303) and hdrs.get(b"location")
    if status == 401:
        assert hdrs.get(b"www-authenticate")


def test_hostile_requests_never_break_the_app_or_change_the_store() -> None:
    idp = LocalIdP("oidc")
    try:
        the_site = site(idp)
        app = asgi_app(the_site, timeout=2.0)

        async def seed() -> None:
            # Something for hostile requests to aim at: a client, a code, tokens.
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
            async with httpx.AsyncClient(transport=transport, base_url="http://acme.test") as c:
                client = await drive_async(register("http://acme.test"), c)
                got = await drive_async(login("http://acme.test", "http://acme.test/mcp", client["client_id"]), c)
                await drive_async(redeem("http://acme.test", client["client_id"], got["code"]), c)

        anyio.run(seed)
        counted = {"requests": 0}

        @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
        @given(batch=requests)
        def run(batch: list) -> None:
            async def go() -> None:
                for method, path, qs, hdrs, data in batch:
                    before = the_site.store.dump()
                    response = await call(app, method, path, qs, hdrs, data)
                    counted["requests"] += 1
                    check(response)
                    if response["status"] >= 400:
                        assert the_site.store.dump() == before, (method, path, response["status"])

            anyio.run(go)

        run()
        assert counted["requests"] >= 1000
    finally:
        idp.stop()
