"""``/metrics`` of a ``serve`` process, on its admin listener only, in the
Prometheus text format (parsed here with prometheus_client's own parser):
what the requests made counted, with labels of bounded variety (never a
client's id or anything it chose)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from processes import free_port, stop_process, tail, wait_until

CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
database = "sqlite:///{db}"
key_file = "{keys}"

[[tenants]]
slug = "acme"
issuer = "http://127.0.0.1:{port}"
resource = "http://127.0.0.1:{port}/mcp"

[tenants.upstream]
kind = "github"
client_id = "c"
client_secret = "s"
"""


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_what_happened_on_the_admin_listener_only(tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    config = tmp_path / "proxy.toml"
    config.write_text(CONFIG.format(port=port, admin=admin, db=tmp_path / "p.db", keys=tmp_path / "keys"))
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mcp_oauth_proxy.cli", "serve", "--config", str(config)],
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=tmp_path)
    base, metrics_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}/metrics"
    try:
        with httpx.Client(trust_env=False, timeout=10) as http:
            wait_until(lambda: http.get(f"{base}/healthz").status_code == 200, 30, "serve", proc, log)
            for _ in range(3):
                assert http.post(f"{base}/mcp", json={}).status_code == 401
            assert http.get(f"{base}/.well-known/oauth-authorization-server").status_code == 200
            weird_client = "https://client.example/" + "x" * 40
            registered = http.post(f"{base}/oauth/register", json={
                "redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "none",
                "client_name": weird_client})
            assert registered.status_code == 201
            assert http.get(f"{base}/metrics").status_code != 200  # the public listener has none
            answer = http.get(metrics_url)
            assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
            samples = _samples(answer.text)
            p = "mcp_oauth_proxy_"
            assert samples[(p + "guard_decisions_total", (("decision", "unauthorized"), ("tenant", "acme")))] == 3
            assert samples[(p + "requests_total", (("endpoint", "register"), ("status", "201"),
                                                   ("tenant", "acme")))] == 1
            assert samples[(p + "requests_total", (("endpoint", "metadata"), ("status", "200"),
                                                   ("tenant", "acme")))] == 1
            assert samples[(p + "grant_events_total", (("event", "client_registered"), ("tenant", "acme")))] == 1
            assert any(name == p + "store_call_seconds_count" and dict(labels)["operation"] == "save_client"
                       for name, labels in samples)
            client_id = registered.json()["client_id"]
            assert client_id not in answer.text and "client.example" not in answer.text
    finally:
        stop_process(proc)
    assert proc.returncode == 0, tail(log)
