"""WebSocket handshakes at every kind of address of ``mcp-oauth-proxy
serve`` (asyncio and trio): no endpoint takes one, so each is refused (a
403: ``websocket.close`` before accepting, ASGI spec), never a 500, and
the server logs no traceback for it, nor its URL (a query can carry a token)."""

from __future__ import annotations

from forward_servers import Proxy, backend, proxy, upstream  # noqa: F401 (fixtures)
from raw_http import exchange

SECRET = "s3cr3t-handshake-query"
HANDSHAKE = [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
             ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Protocol", "mcp"),
             ("Origin", "http://evil.test")]


def test_websocket_handshakes_are_refused_never_a_500(proxy: Proxy) -> None:
    token = [("Authorization", f"Bearer {proxy.access_token}")]
    unknown_host = [("Host", "unknown.test")]
    attempts = [
        ("/oauth/register", []), ("/oauth/token", []), ("/oauth/authorize", []),
        ("/.well-known/oauth-authorization-server", []), ("/.well-known/oauth-protected-resource/mcp", []),
        ("/nowhere", []), ("/oauth/register", unknown_host), ("/mcp", unknown_host),
        ("/mcp", []), ("/mcp", token), ("/mcp/x", token),
    ]
    for path, headers in attempts:
        answer = exchange(proxy.base, "GET", path, HANDSHAKE + headers)
        assert answer.status == 403, (path, headers, answer)
    log = proxy.log.read_text(errors="replace")
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


def test_websocket_handshake_urls_never_reach_the_log(proxy: Proxy) -> None:
    token = [("Authorization", f"Bearer {proxy.access_token}")]
    for path, headers in [(f"/mcp?access_token={SECRET}", []), (f"/mcp/x?access_token={SECRET}", token),
                          (f"/oauth/authorize?state={SECRET}", [])]:
        assert exchange(proxy.base, "GET", path, HANDSHAKE + headers).status == 403
    log = proxy.log.read_text(errors="replace")
    assert SECRET not in log and "/mcp/x" not in log, log[-3000:]
