"""The forwarding attacks mixed at random, through ``mcp-oauth-proxy serve``
(asyncio and trio) in front of the real backend process: paths with dot
segments, encoded slashes and backslashes; identity, token and origin
headers in every spelling (case, "_" for "-"); Content-Length and
Transfer-Encoding alone, together, or repeated. Whatever the mix, the
answer is never a 500 of ours, and whatever reaches the backend stays under
its path, carries no identity but ours and is framed one way."""

from __future__ import annotations

from typing import Any

from forward_servers import TOKEN_HEADER, Proxy, backend, proxy, requests_with, upstream  # noqa: F401 (fixtures)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raw_http import exchange
from test_forward_paths import _under_mcp

SEGMENTS = ["x", "tools", ".", "..", "%2e", "%2E%2e", ".%2e", "a%2fb", "%2F", "%5c", "a\\b", "..;", "",
            "%252e%252e", "%c0%ae%c0%ae", "%EF%BC%8E%EF%BC%8E", "~", "x;y"]
SPOOFED = ["X-MCP-User", "X_MCP_User", "x_mcp_scopes", "X-Mcp-Client-Id", "X_MCP_CLIENT_ID", TOKEN_HEADER,
           TOKEN_HEADER.replace("-", "_"), "X_Forwarded_For", "X-Forwarded-Host", "x_forwarded_proto",
           "X_Real_IP", "Forwarded", "X-MCP-Anything"]
FRAMINGS = ["none", "length", "chunked", "both", "two-lengths"]
OURS = {"x-mcp-user": "user-42", "x-mcp-scopes": "mcp", "x-forwarded-for": "127.0.0.1"}


def _framed(framing: str, body: bytes) -> tuple[list[tuple[str, str]], bytes]:
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    return {
        "none": ([], b""),
        "length": ([("Content-Length", str(len(body)))], body),
        "chunked": ([("Transfer-Encoding", "chunked")], chunked),
        "both": ([("Content-Length", str(len(body))), ("Transfer-Encoding", "chunked")], chunked),
        "two-lengths": ([("Content-Length", str(len(body))), ("Content-Length", str(len(body) + 1))], body),
    }[framing]


attacks = st.tuples(
    st.sampled_from(["GET", "POST", "DELETE"]),
    st.lists(st.sampled_from(SEGMENTS), max_size=5),
    st.lists(st.sampled_from(SPOOFED), max_size=4, unique=True),
    st.sampled_from(FRAMINGS),
)


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-")


def test_mixed_forwarding_attacks_never_break_out(proxy: Proxy) -> None:
    count = {"n": 0}

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(attack=attacks)
    def one(attack: Any) -> None:
        method, segments, spoofed, framing = attack
        count["n"] += 1
        probe = f"probe=fuzz-{proxy.loop}-{count['n']}"
        path = "/mcp/" + "/".join(segments)
        headers = [("Authorization", f"Bearer {proxy.access_token}")] + [(name, "mallory") for name in spoofed]
        framing_headers, body = _framed(framing, b'{"jsonrpc":"2.0"}')
        answer = exchange(proxy.base, method, f"{path}?{probe}", headers + framing_headers, body)
        assert answer.status < 500 or answer.status in (502, 503), (attack, answer)
        for request in requests_with(proxy.backend, probe):
            assert _under_mcp(request["path"]) and _under_mcp(request["raw_path"]), (attack, request)
            names = [_canonical(name) for name, _ in request["headers"]]
            assert not any(value == "mallory" for _, value in request["headers"]), (attack, request)
            for name, value in request["headers"]:
                assert OURS.get(_canonical(name), value) == value, (attack, name, value)
            assert not ("content-length" in names and "transfer-encoding" in names), (attack, request)
            assert names.count("content-length") <= 1, (attack, request)

    one()
