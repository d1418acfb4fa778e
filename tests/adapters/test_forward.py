"""Forwarding to a backend MCP server: ``mcp-oauth-proxy serve`` (asyncio
and trio) as a real process in front of a real backend process (the ``mcp``
SDK's server, ``forward_backend.py``), the upstream a LocalIdP over real
HTTP; plus the forwarder's answers when things go wrong, in-process."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from forward_backend import EVENTS
from forward_servers import TOKEN_HEADER, Proxy, as_guarded, backend, open_gate, proxy, requests_with, seen, upstream  # noqa: F401
from local_idp import LocalIdP
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from oauth_walk import drive, tokens
from processes import free_port
from proxy_apps import site

from mcp_oauth_proxy.adapters.forward import Backend, Forwarder, _target, backend_for
from mcp_oauth_proxy.core.errors import InvalidToken, TemporarilyUnavailable

DEADLINE = 20.0
ACCEPT = "application/json, text/event-stream"


# -- through the server process --------------------------------------------------


def test_mcp_client_session_through_the_proxy(proxy: Proxy) -> None:
    anyio.run(_mcp_session, proxy)


async def _mcp_session(proxy: Proxy) -> None:
    logged: list[str] = []

    async def on_log(params: Any) -> None:
        logged.append(params.data)
        if params.data == "before":
            # The backend's first event reached us while its tool still waits:
            # only now may it go on. A buffering proxy never gets here.
            await anyio.to_thread.run_sync(open_gate, proxy.backend, f"gated-{proxy.loop}")

    # What a client sends beyond its token is no identity: both are replaced.
    forged = proxy.bearer(**{"X-MCP-User": "mallory", "x-mcp-scopes": "admin", TOKEN_HEADER: "forged"})
    async with httpx2.AsyncClient(headers=forged, timeout=DEADLINE) as http:
        with anyio.fail_after(DEADLINE):
            async with Client(streamable_http_client(proxy.mcp, http_client=http), logging_callback=on_log,
                              log_level="info") as client:
                names = {tool.name for tool in (await client.list_tools()).tools}
                assert {"headers", "gated"} <= names

                result = await client.call_tool("headers", {})
                assert not result.is_error, result
                got = json.loads(result.content[0].text)
                assert got["x-mcp-user"] == "user-42"
                assert got["x-mcp-client-id"] == proxy.client_id
                assert got["x-mcp-scopes"] == "mcp"
                assert got[TOKEN_HEADER.lower()] == proxy.upstream_token
                assert "authorization" not in got
                assert got["host"] == proxy.backend.removeprefix("http://")
                assert got["mcp-protocol-version"]

                result = await client.call_tool("gated", {"key": f"gated-{proxy.loop}"})
                assert not result.is_error and result.content[0].text == "done"
                assert logged == ["before", "after"]
    # Our token reached the backend on no request at all.
    assert not any(k.lower() == "authorization" for r in seen(proxy.backend)["seen"] for k, _ in r["headers"])


def test_sse_stream_arrives_intact_and_event_by_event(proxy: Proxy) -> None:
    anyio.run(_sse_stream, proxy)


async def _sse_stream(proxy: Proxy) -> None:
    key = f"events-{proxy.loop}"
    url = f"{proxy.mcp}/events?key={key}"
    headers = proxy.bearer(**{"accept": "text/event-stream", "last-event-id": "7", "mcp-session-id": "sess-1",
                              "mcp-protocol-version": "2025-06-18"})
    async with httpx.AsyncClient(trust_env=False, timeout=DEADLINE) as http:
        with anyio.fail_after(DEADLINE):
            async with http.stream("GET", url, headers=headers) as response:
                assert response.status_code == 200
                assert response.headers["content-type"] == "text/event-stream"
                assert response.headers["cache-control"] == "no-cache"
                assert response.headers["x-backend-says"] == "hi"
                assert "server" not in response.headers
                received = b""
                chunks = response.aiter_raw()
                # The first event arrives while the backend holds back the rest.
                while len(received) < len(EVENTS[0]):
                    received += await chunks.__anext__()
                assert received == EVENTS[0]
                await anyio.to_thread.run_sync(open_gate, proxy.backend, key)
                async for chunk in chunks:
                    received += chunk
    assert received == b"".join(EVENTS)
    (request,) = requests_with(proxy.backend, f"key={key}")
    assert request["method"] == "GET" and request["path"] == "/mcp/events"
    sent = dict(request["headers"])
    assert sent["last-event-id"] == "7" and sent["mcp-session-id"] == "sess-1"
    assert sent["mcp-protocol-version"] == "2025-06-18"
    assert "authorization" not in sent and sent["x-mcp-user"] == "user-42"


def _rpc(method: str, id_: int | None = None, **params: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params:
        message["params"] = params
    if id_ is not None:
        message["id"] = id_
    return message


def _result(response: httpx.Response) -> dict[str, Any]:
    if response.headers["content-type"].startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        return json.loads(data[-1])
    return response.json()


def test_session_id_both_ways_and_delete_ends_the_session(proxy: Proxy) -> None:
    headers = proxy.bearer(accept=ACCEPT)
    with httpx.Client(trust_env=False, timeout=DEADLINE) as http:
        init = http.post(proxy.mcp, headers=headers, json=_rpc(
            "initialize", 1, protocolVersion="2025-06-18", capabilities={},
            clientInfo={"name": "raw", "version": "1"}))
        assert init.status_code == 200, init.text
        assert _result(init)["result"]["serverInfo"]["name"] == "forward-backend"
        session = init.headers["mcp-session-id"]
        version = _result(init)["result"]["protocolVersion"]
        headers = {**headers, "mcp-session-id": session, "mcp-protocol-version": version}
        assert http.post(proxy.mcp, headers=headers, json=_rpc("notifications/initialized")).status_code == 202
        listed = http.post(proxy.mcp, headers=headers, json=_rpc("tools/list", 2))
        assert listed.status_code == 200 and "headers" in {t["name"] for t in _result(listed)["result"]["tools"]}

        ended = http.delete(proxy.mcp, headers=headers)
        assert ended.status_code in (200, 204), ended.text
        after = http.post(proxy.mcp, headers=headers, json=_rpc("tools/list", 3))
        assert after.status_code == 404  # MCP: a terminated session is not found
    deletes = [r for r in seen(proxy.backend)["seen"] if r["method"] == "DELETE"]
    assert any(dict(r["headers"]).get("mcp-session-id") == session for r in deletes)


def test_no_token_is_refused_here_and_never_reaches_the_backend(proxy: Proxy) -> None:
    query = f"probe=anonymous-{proxy.loop}"
    with httpx.Client(trust_env=False, timeout=DEADLINE) as http:
        for headers in ({}, {"authorization": "Bearer mcp_at_forged"}, {"authorization": "Bearer idp-at-1"}):
            refused = http.post(f"{proxy.mcp}?{query}", headers={**headers, "accept": ACCEPT},
                                json=_rpc("tools/list", 1))
            assert refused.status_code == 401
            assert "resource_metadata=" in refused.headers["www-authenticate"]
        # An authorized request with the same query does arrive: the probe looks in the right place.
        allowed = http.get(f"{proxy.mcp}/nowhere?{query}-ok", headers=proxy.bearer())
        assert allowed.status_code == 404  # the backend's own answer
    assert requests_with(proxy.backend, query) == []
    assert [r["path"] for r in requests_with(proxy.backend, f"{query}-ok")] == ["/mcp/nowhere"]


def test_a_client_going_away_cancels_the_backend_request(proxy: Proxy) -> None:
    anyio.run(_goes_away, proxy)


async def _goes_away(proxy: Proxy) -> None:
    key = f"gone-{proxy.loop}"
    async with httpx.AsyncClient(trust_env=False, timeout=DEADLINE) as http:
        with anyio.fail_after(DEADLINE):
            async with http.stream("GET", f"{proxy.mcp}/events?key={key}", headers=proxy.bearer()) as response:
                assert response.status_code == 200
                received = b""
                async for chunk in response.aiter_raw():
                    received += chunk
                    if len(received) >= len(EVENTS[0]):
                        break
    # The connection is closed; the backend hears of it through us.
    with anyio.fail_after(DEADLINE):
        while key not in (await anyio.to_thread.run_sync(seen, proxy.backend))["gone"]:
            await anyio.sleep(0.05)


def test_requests_at_once_while_a_short_lived_upstream_token_is_refreshed_all_reach_the_backend(
        proxy: Proxy, upstream: LocalIdP) -> None:
    """As the MCP SDK opens its event stream with its next POST: requests of
    one grant at once while its upstream token, living shorter than the
    refresh skew, is refreshed. The upstream is asked once; every request is
    forwarded with the token it gave."""
    upstream.expires_in = 1
    try:
        with httpx.Client(trust_env=False, follow_redirects=False, timeout=DEADLINE) as http:
            _, issued = drive(tokens(proxy.base, proxy.mcp), http)
        logged_in, before = time.time(), upstream.issued
        # The server counts whole seconds: from the next one on, the token is due.
        time.sleep(max(0.0, int(logged_in) + 1 - time.time()))
        upstream.expires_in = 20  # the new one lives shorter than the skew too
        upstream.fault, upstream.slow_seconds = "slow", 0.3  # every request arrives while it is under way
        answers = anyio.run(_at_once, proxy, issued["access_token"])
    finally:
        upstream.expires_in, upstream.fault = 3600, None
    assert [a.status_code for a in answers] == [404] * len(answers), [a.text for a in answers]  # the backend's
    assert upstream.issued == before + 1
    for i in range(len(answers)):
        (request,) = requests_with(proxy.backend, f"probe=burst-{proxy.loop}-{i}")
        assert dict(request["headers"])[TOKEN_HEADER.lower()] == f"idp-at-{before + 1}"


async def _at_once(proxy: Proxy, access_token: str, n: int = 6) -> list[httpx.Response]:
    answers: list[httpx.Response] = [None] * n  # type: ignore[list-item]

    async def one(i: int) -> None:
        answers[i] = await http.get(f"{proxy.mcp}/nowhere?probe=burst-{proxy.loop}-{i}",
                                    headers={"authorization": f"Bearer {access_token}"})

    async with httpx.AsyncClient(trust_env=False, timeout=DEADLINE) as http:
        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tasks:
                for i in range(n):
                    tasks.start_soon(one, i)
    return answers


# -- the forwarder in-process: what it answers when things go wrong --------------


def _client(app: Any) -> httpx.AsyncClient:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://acme.test")
    del client.headers["accept-encoding"]  # as a client that asks for no compression
    return client


async def _no_token() -> str:
    raise AssertionError("the upstream token was asked for, though the tenant did not opt in")


@pytest.mark.anyio
async def test_backend_down_is_a_502_without_detail(oidc_idp: LocalIdP, anyio_backend: str) -> None:
    port = free_port()  # nothing listens there
    forwarder = Forwarder(site(oidc_idp), {"acme": Backend(f"http://127.0.0.1:{port}/mcp", "/mcp")})
    async with _client(as_guarded(forwarder, _no_token)) as http:
        answer = await http.post("/mcp", json={}, headers={"authorization": "Bearer x"})
    await forwarder.aclose()
    assert answer.status_code == 502
    assert answer.json()["error"] == "temporarily_unavailable"
    assert str(port) not in answer.text and "127.0.0.1" not in answer.text


@pytest.mark.anyio
async def test_upstream_token_failures(oidc_idp: LocalIdP, anyio_backend: str, backend: str) -> None:
    forwarder = Forwarder(site(oidc_idp), {"acme": Backend(f"{backend}/mcp", "/mcp", TOKEN_HEADER)})

    async def sign_in_again() -> str:
        raise InvalidToken("the upstream grant is gone")

    async def later() -> str:
        raise TemporarilyUnavailable("the identity provider is not available at the moment")

    async def still_refreshing() -> str:
        raise TemporarilyUnavailable("the identity provider's token is being refreshed; try again",
                                     headers=(("retry-after", "2"),))

    query = f"probe=token-failure-{anyio_backend}"
    async with _client(as_guarded(forwarder, sign_in_again)) as http:
        denied = await http.post(f"/mcp?{query}", json={})
    assert denied.status_code == 401 and denied.json()["error"] == "invalid_token"
    assert denied.headers["www-authenticate"].startswith('Bearer resource_metadata="http://acme.test/')
    assert 'error="invalid_token"' in denied.headers["www-authenticate"]
    async with _client(as_guarded(forwarder, later)) as http:
        unavailable = await http.post(f"/mcp?{query}", json={})
    assert unavailable.status_code == 503 and unavailable.json()["error"] == "temporarily_unavailable"
    assert unavailable.headers["retry-after"] == "30"
    async with _client(as_guarded(forwarder, still_refreshing)) as http:
        soon = await http.post(f"/mcp?{query}", json={})
    # The core's own hint: a refresh under way is done in a moment.
    assert soon.status_code == 503 and soon.headers["retry-after"] == "2"
    assert soon.json() == {"error": "temporarily_unavailable",
                           "error_description": "the identity provider's token is being refreshed; try again"}
    assert await anyio.to_thread.run_sync(requests_with, backend, query) == []
    await forwarder.aclose()


@pytest.mark.anyio
async def test_without_the_opt_in_no_upstream_token_and_headers_filtered(
        oidc_idp: LocalIdP, anyio_backend: str, backend: str) -> None:
    key = f"plain-{anyio_backend}"
    await anyio.to_thread.run_sync(open_gate, backend, key)
    forwarder = Forwarder(site(oidc_idp), {"acme": Backend(f"{backend}/mcp", "/mcp")})
    async with _client(as_guarded(forwarder, _no_token)) as http:
        answer = await http.get(f"/mcp/events?key={key}", headers={
            "authorization": "Bearer mcp_at_ours", "x-mcp-client-id": "spoof", "connection": "x-private",
            "x-private": "hop", "proxy-authorization": "Basic eA==", "cookie": "mcp_browser=c; theirs=1",
            "keep-alive": "timeout=5", "x-app": "kept"})
    await forwarder.aclose()
    assert answer.status_code == 200 and answer.content == b"".join(EVENTS)
    (request,) = await anyio.to_thread.run_sync(requests_with, backend, f"key={key}")
    names = [k for k, _ in request["headers"]]
    sent = dict(request["headers"])
    for gone in ("authorization", "x-private", "proxy-authorization", "keep-alive", TOKEN_HEADER.lower()):
        assert gone not in sent, gone
    assert "connection" not in sent  # the client's is hop-by-hop; HTTP/1.1 keeps a connection without one
    assert names.count("x-mcp-client-id") == 1 and sent["x-mcp-client-id"] == "client-1"
    assert sent["x-mcp-scopes"] == "mcp extra" and sent["x-app"] == "kept"
    assert sent["cookie"] == "theirs=1" and sent["accept-encoding"] == "identity"


@pytest.mark.anyio
@pytest.mark.parametrize("behind_proxy", [False, True])
async def test_where_the_request_came_from_is_said_anew(
        oidc_idp: LocalIdP, anyio_backend: str, backend: str, behind_proxy: bool) -> None:
    key = f"origin-{anyio_backend}-{behind_proxy}"
    await anyio.to_thread.run_sync(open_gate, backend, key)
    trusted = ["127.0.0.0/8"] if behind_proxy else []
    forwarder = Forwarder(site(oidc_idp, trusted_proxies=trusted), {"acme": Backend(f"{backend}/mcp", "/mcp")})
    app = as_guarded(forwarder, _no_token)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.5", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://acme.test") as http:
        answer = await http.get(f"/mcp/events?key={key}", headers=[
            ("forwarded", 'for="6.6.6.6";host=evil.test'), ("x-forwarded-for", "10.9.9.9, 203.0.113.9"),
            ("x-forwarded-host", "public.example"), ("x-forwarded-proto", "https"), ("x-forwarded-proto", "https"),
            ("x-real-ip", "6.6.6.6"), ("x-forwarded-port", "1"), ("true-client-ip", "6.6.6.6"),
            ("x-forwarded-prefix", "/api"), ("x-forwarded-scheme", "https")])
    await forwarder.aclose()
    assert answer.status_code == 200
    (request,) = await anyio.to_thread.run_sync(requests_with, backend, f"key={key}")
    names = [k for k, _ in request["headers"]]
    for name in ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"):
        assert names.count(name) == 1, name  # ours alone
    claims = ("x-real-ip", "x-forwarded-port", "true-client-ip", "x-forwarded-prefix", "x-forwarded-scheme")
    for name in claims:  # passed on from a trusted proxy only
        assert (name in names) == behind_proxy, name
    sent = dict(request["headers"])
    if behind_proxy:  # the proxy's right-most values are believed
        assert sent["forwarded"] == 'for="203.0.113.9";host="public.example";proto=https'
        assert (sent["x-forwarded-for"], sent["x-forwarded-host"], sent["x-forwarded-proto"]) == (
            "203.0.113.9", "public.example", "https")
    else:  # a client's own claims are dropped
        assert sent["forwarded"] == 'for="127.0.0.5";host="acme.test";proto=http'
        assert (sent["x-forwarded-for"], sent["x-forwarded-host"], sent["x-forwarded-proto"]) == (
            "127.0.0.5", "acme.test", "http")


def test_forwarded_quotes_ipv6_and_odd_hosts() -> None:
    from mcp_oauth_proxy.adapters.forward_headers import origin_headers

    forwarded = dict(origin_headers("https", 'h"o\\st', "2001:db8::1"))[b"forwarded"]
    assert forwarded == b'for="[2001:db8::1]";host="h\\"o\\\\st";proto=https'  # RFC 7239 §6, quoted-string
    assert dict(origin_headers("http", "a.test", ""))[b"forwarded"] == b'for="unknown";host="a.test";proto=http'
    # As a trusted proxy may send them: with ports, the IPv6 one bracketed already.
    for client in ("192.0.2.43:47011", "[2001:db8:cafe::17]:4711", "192.0.2.43"):
        assert dict(origin_headers("http", "a.test", client))[b"forwarded"].startswith(f'for="{client}";'.encode())


@pytest.mark.anyio
async def test_a_body_over_the_cap_is_refused(oidc_idp: LocalIdP, anyio_backend: str, backend: str) -> None:
    forwarder = Forwarder(site(oidc_idp), {"acme": Backend(f"{backend}/mcp", "/mcp")}, max_body=1000)

    async def chunks() -> Any:
        for _ in range(20):
            yield b"x" * 100

    probe = f"probe=too-large-{anyio_backend}"
    json_type = {"content-type": "application/json"}
    async with _client(as_guarded(forwarder, _no_token)) as http:
        said = await http.post(f"/mcp?{probe}-said", content=b"x" * 1001, headers=json_type)
        streamed = await http.post(f"/mcp?{probe}-streamed", content=chunks(), headers=json_type)
        fits = await http.post(f"/mcp?{probe}-fits", content=b"x" * 1000, headers=json_type)
    await forwarder.aclose()
    for answer in (said, streamed):
        assert answer.status_code == 413 and answer.json()["error"] == "invalid_request", answer.text
    # A declared length over the cap is refused before the backend is asked.
    assert await anyio.to_thread.run_sync(requests_with, backend, f"{probe}-said") == []
    assert fits.status_code != 413
    assert len(await anyio.to_thread.run_sync(requests_with, backend, f"{probe}-fits")) == 1


def test_a_broken_stream_reaches_the_client_cut_short_never_as_a_whole_answer(proxy: Proxy) -> None:
    """The backend drops its connection after one event: the client gets
    that event, then sees the answer broken off (no ending that would pass
    the part for the whole)."""
    with httpx.Client(trust_env=False, timeout=DEADLINE) as http:
        with http.stream("GET", f"{proxy.mcp}/broken", headers=proxy.bearer()) as response:
            assert response.status_code == 200
            received = b""
            with pytest.raises(httpx.RemoteProtocolError):
                for chunk in response.iter_raw():
                    received += chunk
    assert received == EVENTS[0]
    assert "Traceback" not in proxy.log.read_text(errors="replace")


@pytest.mark.anyio
async def test_a_chunked_body_goes_on(oidc_idp: LocalIdP, anyio_backend: str, backend: str) -> None:
    forwarder = Forwarder(site(oidc_idp), {"acme": Backend(f"{backend}/mcp", "/mcp")})

    async def chunks() -> Any:
        message = json.dumps(_rpc("initialize", 1, protocolVersion="2025-06-18", capabilities={},
                                  clientInfo={"name": "chunked", "version": "1"})).encode()
        for i in range(0, len(message), 16):
            yield message[i:i + 16]

    async with _client(as_guarded(forwarder, _no_token)) as http:
        init = await http.post(f"/mcp?probe=chunked-{anyio_backend}", content=chunks(), headers={
            "accept": ACCEPT, "content-type": "application/json"})
    await forwarder.aclose()
    assert init.status_code == 200, init.text
    assert _result(init)["result"]["serverInfo"]["name"] == "forward-backend"
    (request,) = await anyio.to_thread.run_sync(requests_with, backend, f"probe=chunked-{anyio_backend}")
    assert dict(request["headers"])["transfer-encoding"] == "chunked"


@pytest.mark.anyio
async def test_tenant_without_backend_other_methods_and_paths(oidc_idp: LocalIdP, anyio_backend: str) -> None:
    forwarder = Forwarder(site(oidc_idp), {"other": Backend("http://127.0.0.1:9/mcp", "/mcp")})
    async with _client(as_guarded(forwarder, _no_token)) as http:
        missing = await http.post("/mcp", json={})
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    forwarder = Forwarder(site(oidc_idp), {"acme": Backend("http://127.0.0.1:9/mcp", "/mcp")})
    async with _client(as_guarded(forwarder, _no_token)) as http:
        put = await http.put("/mcp", json={})
        # Nothing listens on port 9: these are the forwarder's own answers.
        outside = await http.post("/other", json={})
        dotted = await http.post("/mcp/%2e%2e/other", json={})
    assert put.status_code == 405 and put.headers["allow"] == "GET, POST, DELETE"
    assert outside.status_code == 404 and outside.json()["error"] == "not_found"
    assert dotted.status_code == 400 and dotted.json()["error"] == "invalid_request"


@pytest.mark.parametrize(("resource_path", "path", "query", "backend", "expected"), [
    ("/mcp", "/mcp", b"", "http://b:9000/mcp", "http://b:9000/mcp"),
    ("/mcp", "/mcp/", b"", "http://b:9000/mcp", "http://b:9000/mcp"),
    ("/mcp", "/mcp/x/y", b"a=1&b=%20", "http://b:9000/mcp", "http://b:9000/mcp/x/y?a=1&b=%20"),
    ("/mcp", "/mcp/x", b"", "http://b:9000/api/", "http://b:9000/api/x"),
    ("/mcp", "/mcp/a%20b/", b"", "http://b:9000/", "http://b:9000/a%20b/"),  # segments go on as sent
    ("/mcp", "/%6Dcp/x", b"", "http://b:9000/mcp", "http://b:9000/mcp/x"),  # compared decoded, as the guard does
    ("/t/mcp", "/t/mcp", b"q", "http://b:9000/mcp", "http://b:9000/mcp?q"),
    ("", "/x", b"", "http://b:9000/mcp", "http://b:9000/mcp/x"),
    ("/mcp", "/mcpx/y", b"", "http://b:9000/mcp", None),  # not under the resource path
    ("/t/mcp", "/mcp", b"", "http://b:9000/mcp", None),
])
def test_paths_map_onto_the_backend(resource_path: str, path: str, query: bytes, backend: str,
                                    expected: str | None) -> None:
    assert _target(path, query, backend_for(f"http://acme.test{resource_path}", backend)) == expected
