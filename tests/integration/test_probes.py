"""``/healthz`` and ``/readyz`` of a ``serve`` process: alive at once;
ready once the database answers at the schema it knows and every file
tenant's upstream endpoints are known (an organization's server is not
waited for) (an OIDC issuer's discovered, retried while it
fails); tiny bodies that say nothing more; probes of any host."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
from processes import free_port, stop_process, tail, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "adapters"))
from local_idp import LocalIdP  # noqa: E402

CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
database = "sqlite:///{db}"
key_file = "{keys}"

[[tenants]]
slug = "acme"
issuer = "http://127.0.0.1:{port}"
resource = "http://127.0.0.1:{port}/mcp"

[tenants.upstream]
kind = "oidc"
issuer = "{idp}"
client_id = "c"
client_secret = "s"
"""


def test_liveness_at_once_readiness_once_the_upstream_is_discovered(tmp_path: Path) -> None:
    idp = LocalIdP("oidc")
    idp.fault = "500"  # discovery fails at first
    port = free_port()
    config = tmp_path / "proxy.toml"
    config.write_text(CONFIG.format(port=port, db=tmp_path / "p.db", keys=tmp_path / "keys", idp=idp.issuer))
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mcp_oauth_proxy.cli", "serve", "--config", str(config)],
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(trust_env=False, timeout=15) as http:
            wait_until(lambda: http.get(f"{base}/healthz").status_code == 200, 30, "serve", proc, log)
            alive = http.get(f"{base}/healthz", headers={"host": "anything.example"})
            assert alive.status_code == 200 and alive.json() == {"status": "ok"}
            not_ready = http.get(f"{base}/readyz")
            assert not_ready.status_code == 503 and not_ready.json() == {"status": "unavailable"}
            assert idp.issuer not in not_ready.text
            idp.fault = None
            deadline = time.monotonic() + 60  # discovery is retried with a growing pause
            while http.get(f"{base}/readyz").status_code != 200:
                assert time.monotonic() < deadline, "never ready"
                time.sleep(0.5)
            assert http.head(f"{base}/readyz").status_code == 200
            assert http.post(f"{base}/readyz").status_code != 200  # a probe is a GET
    finally:
        stop_process(proc)
        idp.stop()
    assert proc.returncode == 0, tail(log)


def _github_app(tmp_path: Path) -> tuple[Path, Any, Callable[[], int]]:
    """The served app of a config whose tenant needs no discovery (SQLite),
    and what its /readyz answers."""
    import anyio

    from mcp_oauth_proxy import config as config_mod
    from mcp_oauth_proxy.app import build_app

    path = tmp_path / "proxy.toml"
    path.write_text(CONFIG.format(port=free_port(), db=tmp_path / "p.db", keys=tmp_path / "keys",
                                  idp="http://127.0.0.1:9")
                    .replace('kind = "oidc"\nissuer = "http://127.0.0.1:9"', 'kind = "github"'))
    app = build_app(config_mod.load(str(path)))

    async def status() -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
            return (await http.get("http://x/readyz")).status_code

    return path, app, lambda: anyio.run(status)


def test_not_ready_at_a_schema_it_does_not_know(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mcp_oauth_proxy import config as config_mod
    from mcp_oauth_proxy.app import build_app
    from mcp_oauth_proxy.storage import migrations
    from schema_history import add_revision

    path, app, status = _github_app(tmp_path)
    assert status() == 200
    # Another replica moved the database on to a schema this one does not know.
    add_revision(tmp_path, monkeypatch)
    migrations.head_version.cache_clear()
    build_app(config_mod.load(str(path)), upgrade=True).site.store.traits.pool.dispose()
    monkeypatch.undo()
    migrations.head_version.cache_clear()
    assert status() == 503
    app.site.store.traits.pool.dispose()


def test_an_organizations_server_whose_upstream_is_unknown_leaves_the_replica_ready(tmp_path: Path) -> None:
    # A review: one organization's admin made every replica unready (out of
    # every load balancer, every tenant with it) with a server whose OAuth
    # configuration names an issuer without a discovery document. An
    # organization's upstream failing fails its own logins only.
    from mcp_oauth_proxy.core.models import OAuthConfig, Organization, Server

    _, app, status = _github_app(tmp_path)
    store = app.site.store
    store.create_organization(Organization("org", "Org", 0))
    store.create_oauth_config(OAuthConfig("org", "idp", kind="oidc", client_id="c", client_secret="s",
                                          issuer="https://idp.invalid"))
    store.create_server(Server(slug="beta", organization="org", oauth_config="idp", issuer="https://beta.invalid",
                               resource="https://beta.invalid/mcp"))
    assert app.site.directory.refresh() and len(app.site.directory.current.entries) == 2
    try:
        assert status() == 200
    finally:
        app.site.store.traits.pool.dispose()
