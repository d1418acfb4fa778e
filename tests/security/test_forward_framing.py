"""Request framing that disagrees with itself, and what the outbound client
makes of it: both Content-Length and Transfer-Encoding through ``mcp-oauth-proxy
serve`` (the default server and trio) in front of the real backend process; a body that
does not match its Content-Length given to the forwarder in-process."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from forward_servers import DEADLINE, Proxy, as_guarded, backend, proxy, requests_with, upstream  # noqa: F401
from local_idp import LocalIdP
from proxy_apps import site
from raw_http import exchange

from mcp_oauth_proxy.adapters.forward import Backend, Forwarder


def test_content_length_with_transfer_encoding_is_refused(proxy: Proxy) -> None:
    # RFC 9112 §6.3: both in one request "ought to be handled as an error";
    # forwarded, the backend would read the body by the other one.
    probe = f"probe=cl-te-{proxy.loop}"
    for i, framing in enumerate([[("Content-Length", "3"), ("Transfer-Encoding", "chunked")],
                                 [("Transfer-Encoding", "chunked"), ("Content-Length", "40")]]):
        answer = exchange(proxy.base, "POST", f"/mcp?{probe}-{i}", [
            ("Authorization", f"Bearer {proxy.access_token}"), ("Content-Type", "application/json"), *framing],
            b"2\r\n{}\r\n0\r\n\r\n")
        assert answer.status == 400, answer
        if answer.headers.get("content-type") == "application/json":
            assert json.loads(answer.body)["error"] == "invalid_request"
        # else refused by the server's parser (uvicorn's), before any app saw it
        assert requests_with(proxy.backend, f"{probe}-{i}") == []
    assert "Traceback" not in proxy.log.read_text(errors="replace")


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
@pytest.mark.parametrize("sent", [b"{}" * 10, b"{"])
def test_a_protocol_error_with_the_backend_is_a_502_never_a_500(
        upstream: LocalIdP, backend: str, loop: str, sent: bytes) -> None:
    # A body longer or shorter than its Content-Length: the outbound client
    # refuses to send it (h11's LocalProtocolError, which httpx does not wrap).
    async def main() -> list[dict[str, Any]]:
        forwarder = Forwarder(site(upstream), {"acme": Backend(f"{backend}/mcp", "/mcp")})
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/mcp", "raw_path": b"/mcp", "query_string": f"probe=framing-{loop}".encode(),
                 "headers": [(b"host", b"acme.test"), (b"content-length", b"5")], "client": ("127.0.0.1", 1),
                 "server": ("acme.test", 80)}
        messages = [{"type": "http.request", "body": sent}]
        sent_back: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            await anyio.sleep_forever()
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            sent_back.append(message)

        with anyio.fail_after(DEADLINE):
            await as_guarded(forwarder, None)(scope, receive, send)
        await forwarder.aclose()
        return sent_back

    answer = anyio.run(main, backend=loop)
    assert answer[0]["status"] == 502
    assert json.loads(answer[1]["body"])["error"] == "temporarily_unavailable"
