"""What counting metrics costs the guard: one process, one core, the guard
app (``app.build_app`` with a trivial backend) called in-process with a
remembered token, round after round alternating the real metrics functions
with no-ops (same app, same token, same run). Prints requests/s of each,
and the ratio per round and its median: near 1.00 means the metrics cost
nothing measurable next to the guard itself; then the counting alone, timed
apart, as a share of a whole guarded request.

    python bench/bench_metrics.py [--requests 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import statistics
import time
from typing import Any

import anyio

from mcp_oauth_proxy import config as config_mod
from mcp_oauth_proxy import metrics
from mcp_oauth_proxy.app import build_app
from mcp_oauth_proxy.core.models import AccessToken, CodeGrant, Grant, UpstreamTokens

HOST = "bench.example"


async def _ok(scope: dict, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _app() -> tuple[Any, str]:
    config = config_mod.parse({"server": {"token_cache_seconds": 300}, "tenants": [{
        "slug": "bench", "issuer": f"https://{HOST}", "resource": f"https://{HOST}/mcp",
        "upstream": {"kind": "github", "client_id": "c", "client_secret": "s"}}]})
    app = build_app(config, backend=_ok)
    store, now = app.site.store, int(time.time())
    token = "mcp_at_" + secrets.token_urlsafe(32)
    g = Grant(tenant="bench", grant_id="g", client_id="c", user_id="u", scope=("mcp",), resource=f"https://{HOST}/mcp",
              code_hash="ch", claims={}, upstream=UpstreamTokens("up"), created_at=now, expires_at=now + 86400)
    store.save_grant_and_code(g, CodeGrant(tenant="bench", code_hash="ch", grant_id="g", client_id="c", user_id="u",
                                           redirect_uri="http://127.0.0.1/cb", redirect_uri_given=True,
                                           code_challenge="c" * 43, scope=("mcp",), resource=g.resource,
                                           expires_at=now + 60))
    store.redeem_code(tenant="bench", code_hash="ch", now=now, keep_client=False, access=AccessToken(
        tenant="bench", token_hash=hashlib.sha256(token.encode()).hexdigest(), grant_id="g", client_id="c",
        user_id="u", scope=("mcp",), resource=g.resource, issued_at=now, expires_at=now + 3600), refresh=None)
    return app, token


async def _round(app: Any, token: str, n: int) -> float:
    scope = {"type": "http", "method": "GET", "path": "/mcp", "raw_path": b"/mcp", "query_string": b"",
             "scheme": "https", "http_version": "1.1", "headers": [(b"host", HOST.encode()), (b"authorization", f"Bearer {token}".encode())],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 443)}
    statuses: list[int] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    started = time.perf_counter()
    for _ in range(n):
        await app(scope, receive, send)
    elapsed = time.perf_counter() - started
    assert statuses == [200] * n, set(statuses)
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    app, token = _app()
    real = (metrics.guard_decision, metrics.cache_lookup)

    def off() -> None:
        metrics.guard_decision = lambda *a: None  # type: ignore[assignment]
        metrics.cache_lookup = lambda *a: None  # type: ignore[assignment]

    def on() -> None:
        metrics.guard_decision, metrics.cache_lookup = real  # type: ignore[assignment]

    anyio.run(_round, app, token, 2000)  # warm up
    ratios = []
    for i in range(args.rounds):
        on()
        with_metrics = anyio.run(_round, app, token, args.requests)
        off()
        without = anyio.run(_round, app, token, args.requests)
        ratios.append(with_metrics / without)
        print(f"round {i + 1}: with metrics {with_metrics:,.0f} req/s, without {without:,.0f} req/s, "
              f"ratio {ratios[-1]:.3f}")
    on()
    print(f"median ratio (with/without): {statistics.median(ratios):.3f}")
    # The counting alone, timed apart from the noise of whole requests.
    calls = 200_000
    started = time.perf_counter()
    for _ in range(calls):
        metrics.cache_lookup(True)
        metrics.guard_decision("bench", None)
    per_request = (time.perf_counter() - started) / calls
    guard = 1 / statistics.median([anyio.run(_round, app, token, args.requests) for _ in range(3)])
    print(f"counting per guarded request: {per_request * 1e6:.2f} us, "
          f"{per_request / guard:.1%} of a whole in-process guarded request ({guard * 1e6:.1f} us)")


if __name__ == "__main__":
    main()
