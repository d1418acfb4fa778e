"""The server's own housekeeping: expired records removed in batches while
it runs; an older database schema refused by `serve` unless `--upgrade`;
rate limits from the config."""

from __future__ import annotations

import time

import anyio
import pytest

from schema_history import add_revision
from support import Harness
from mcp_oauth_proxy import cli
from mcp_oauth_proxy import config as config_mod
from mcp_oauth_proxy.app import build_app
from mcp_oauth_proxy.core.errors import StorageUnavailable
from mcp_oauth_proxy.core.tenant import RateLimit
from mcp_oauth_proxy.core.context import token_hash
from mcp_oauth_proxy.core.models import Revocation
from mcp_oauth_proxy.housekeeping import OVERLAP, collect, collect_periodically, follow_revocations
from mcp_oauth_proxy.storage.memory import MemoryStore
from mcp_oauth_proxy.storage.token_cache import TokenCache


def _expired_world(n: int) -> Harness:
    h = Harness()
    for _ in range(n):
        h.tokens()
    return h


def test_collect_removes_every_expired_record_in_batches():
    h = _expired_world(3)
    calls = []
    real = h.store.delete_expired

    def counting(now, limit):
        calls.append(limit)
        return real(now, limit)

    h.store.delete_expired = counting  # type: ignore[method-assign]
    removed = collect(h.store, h.now + 10**9, batch=2)
    assert removed > 6 and len(calls) > 2 and set(calls) == {2}
    assert h.store._access == {} and h.store._refresh == {} and h.store._grants == {}


def test_collect_keeps_what_has_not_expired():
    h = _expired_world(1)
    assert collect(h.store, h.now + 10, batch=100) == 0
    assert h.store._access and h.store._grants


def test_the_periodic_collection_runs_and_survives_an_outage():
    h = _expired_world(2)
    outages = {"left": 1}
    real = h.store.delete_expired

    def flaky(now, limit):
        if outages["left"]:
            outages["left"] -= 1
            raise StorageUnavailable("down")
        return real(now, limit)

    h.store.delete_expired = flaky  # type: ignore[method-assign]

    async def main() -> None:
        with anyio.move_on_after(5):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(collect_periodically, h.store, 0.01, 100, lambda: h.now + 10**9)
                while h.store._access:
                    await anyio.sleep(0.01)
                tasks.cancel_scope.cancel()

    anyio.run(main)
    assert outages["left"] == 0 and h.store._access == {}


CONFIG = """\
[server]
listen = "127.0.0.1:8123"
database = "sqlite:///{db}"
key_file = "{keys}"
gc_interval = 60

[[tenants]]
slug = "acme"
issuer = "http://127.0.0.1:8123"
resource = "http://127.0.0.1:8123/mcp"

[tenants.rate_limits.token]
per_address = 7
per_client = 3
window = 10

[tenants.upstream]
kind = "github"
client_id = "x"
client_secret = "y"
"""


def test_serve_refuses_an_older_schema_naming_the_command_and_upgrade_migrates(tmp_path, monkeypatch, capsys):
    path = tmp_path / "proxy.toml"
    path.write_text(CONFIG.format(db=tmp_path / "proxy.db", keys=tmp_path / "proxy.keys"))
    config = config_mod.load(str(path))
    build_app(config).site.store.traits.pool.dispose()  # a database at today's version

    add_revision(tmp_path, monkeypatch, 'op.create_table("extra", sa.Column("id", sa.Integer, primary_key=True))')
    assert cli.main(["serve", "--config", str(path)]) == 1
    assert "mcp-oauth-proxy db upgrade" in capsys.readouterr().err
    app = build_app(config, upgrade=True)  # what `serve --upgrade` does before serving
    app.site.store.traits.pool.dispose()
    build_app(config).site.store.traits.pool.dispose()  # now current: no refusal


def test_rate_limits_and_gc_settings_come_from_the_config(tmp_path):
    path = tmp_path / "proxy.toml"
    path.write_text(CONFIG.format(db=tmp_path / "proxy.db", keys=tmp_path / "proxy.keys"))
    config = config_mod.load(str(path))
    assert config.server.gc_interval == 60
    app = build_app(config)
    tenant = app.site.entries[0].tenant
    assert tenant.rate_limits.token == RateLimit(per_address=7, per_client=3, window=10)
    assert tenant.rate_limits.register == RateLimit(per_address=20, window=3600)  # the default
    assert tenant.rate_limits.connections == RateLimit(per_address=120)
    app.site.store.traits.pool.dispose()


@pytest.mark.parametrize("table, message", [
    ("[tenants.rate_limits.token]\nper_client = -1", "tenants[0].rate_limits.token: counts must not be negative"),
    ("[tenants.rate_limits.register]\nwindow = 0", "tenants[0].rate_limits.register.window: must be positive"),
    ("[tenants.rate_limits.callback]\nper_client = 5", "tenants[0].rate_limits.callback.per_client: callback is"),
    ("[tenants.rate_limits.token]\nper_grant = -1", "tenants[0].rate_limits.token: counts must not be negative"),
    ("[tenants.rate_limits.authorize]\nper_grant = 5",
     "tenants[0].rate_limits.authorize.per_grant: authorize is counted per address and client only"),
    ("[tenants.rate_limits.revoke]\nper_client = 5", "tenants[0].rate_limits.revoke.per_client: revoke is counted per"),
    ("[tenants.rate_limits.connections]\nper_client = 5",
     "tenants[0].rate_limits.connections.per_client: connections is counted per address only"),
])
def test_bad_rate_limits_are_named(tmp_path, table, message):
    base = CONFIG.split("[tenants.rate_limits.token]")[0] + table + "\n\n[tenants.upstream]" + CONFIG.split("[tenants.upstream]")[1]
    path = tmp_path / "proxy.toml"
    path.write_text(base.format(db=tmp_path / "proxy.db", keys=tmp_path / "proxy.keys"))
    with pytest.raises(config_mod.ConfigError) as exc:
        config_mod.load(str(path))
    assert any(p.startswith(message) for p in exc.value.problems), exc.value.problems


def test_a_negative_token_cache_is_named(tmp_path):
    path = tmp_path / "proxy.toml"
    path.write_text(CONFIG.replace("gc_interval = 60", "token_cache_seconds = -1").format(
        db=tmp_path / "proxy.db", keys=tmp_path / "proxy.keys"))
    with pytest.raises(config_mod.ConfigError) as exc:
        config_mod.load(str(path))
    assert any(p.startswith("server.token_cache_seconds: must not be negative") for p in exc.value.problems)


def test_the_served_store_remembers_tokens_unless_turned_off(tmp_path):
    from mcp_oauth_proxy.storage.token_cache import TokenCache

    path = tmp_path / "proxy.toml"
    path.write_text(CONFIG.format(db=tmp_path / "proxy.db", keys=tmp_path / "proxy.keys"))
    app = build_app(config_mod.load(str(path)))
    assert isinstance(app.site.store, TokenCache) and app.site.store_blocks
    app.site.store.traits.pool.dispose()
    path.write_text(CONFIG.replace("gc_interval = 60", "token_cache_seconds = 0").format(
        db=tmp_path / "proxy.db", keys=tmp_path / "proxy.keys"))
    app = build_app(config_mod.load(str(path)))
    assert not isinstance(app.site.store, TokenCache)
    app.site.store.traits.pool.dispose()


class _Flaky(MemoryStore):
    """A shared store whose record of revocations can be made unreachable."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.asked: list[int] = []

    def revocations_since(self, since: int) -> list[Revocation]:
        self.asked.append(since)
        if self.down:
            raise StorageUnavailable("down")
        return super().revocations_since(since)


def test_what_another_process_revokes_is_forgotten_and_a_blind_spell_forgets_everything():
    inner = _Flaky()
    h = Harness(store=TokenCache(inner, 300))  # type: ignore[arg-type]
    _, tokens = h.tokens()
    _, others = h.tokens()
    for token in (tokens["access_token"], others["access_token"]):
        assert h.guard(token).user_id == "user-42"  # remembered for 300 s
    one = inner.get_access_token("acme", token_hash(tokens["access_token"]))
    other = inner.get_access_token("acme", token_hash(others["access_token"]))
    assert one is not None and other is not None

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(follow_revocations, h.store, 0.01)
            inner.revoke_access_token("acme", one.token_hash)  # as another process would: not through the cache
            await anyio.sleep(0.1)
            assert h.store.remembered("acme", one.token_hash) is None
            assert h.store.remembered("acme", other.token_hash) is not None
            inner.down = True
            await anyio.sleep(0.05)
            inner.down = False
            await anyio.sleep(0.05)
            # Revocations made while it could not look may be gone from the record: it remembers nothing.
            assert h.store.remembered("acme", other.token_hash) is None
            tasks.cancel_scope.cancel()

    anyio.run(main)
    # Each look reads the last OVERLAP seconds again (a late commit, another replica's clock).
    assert min(inner.asked) <= time.time() - OVERLAP
