"""The tenant directory (directory.py): which tenant serves a host and path,
from one cache per snapshot; a whole set of tenants swapped in at once, so a
reader never sees half of a change; the seam a database source plugs into."""

from __future__ import annotations

import threading
from typing import Sequence

import anyio
import attrs
import httpx
import pytest

from mcp_oauth_proxy.adapters.asgi import BearerGuard, OAuthApp
from mcp_oauth_proxy.adapters.site import Site
from mcp_oauth_proxy.app import ServerApp
from mcp_oauth_proxy.core import tenancy
from mcp_oauth_proxy.core.tenant import Tenant, Upstream
from mcp_oauth_proxy.directory import Directory, Entry, FixedTenants, Listed, Snapshot
from mcp_oauth_proxy.storage.memory import MemoryStore
from mcp_oauth_proxy.upstream.providers import NotReady, Static

UP = Upstream(authorization_endpoint="https://idp.test/a", token_endpoint="https://idp.test/t", client_id="c")


def tenant(slug: str, issuer: str, resource: str | None = None) -> Tenant:
    return Tenant(slug=slug, issuer=issuer, resource=resource or issuer.rstrip("/") + "/mcp", upstream=UP)


ROOT = tenant("root", "https://shared.test")
TEAM = tenant("team", "https://shared.test/team", "https://shared.test/team/mcp")
OTHER = tenant("other", "https://other.test:8443")


@pytest.mark.parametrize(("scheme", "host", "path", "expected"), [
    ("https", "shared.test", "/mcp", "root"),
    ("https", "shared.test:443", "/oauth/token", "root"),
    ("https", "SHARED.test", "/team/oauth/token", "team"),  # the longest issuer path wins
    ("https", "shared.test", "/team/mcp", "team"),
    ("https", "shared.test", "/.well-known/oauth-authorization-server/team", "team"),  # RFC 8414 §3.1
    ("https", "shared.test", "/teams", "root"),
    ("https", "other.test:8443", "/mcp", "other"),
    ("https", "other.test", "/mcp", None),  # another port
    ("https", "nobody.test", "/mcp", None),
])
def test_a_snapshot_picks_the_tenant_of_a_place(scheme: str, host: str, path: str, expected: str | None) -> None:
    snapshot = Snapshot([ROOT, TEAM, OTHER])
    entry = snapshot.pick(scheme, host, path)
    assert (entry.tenant.slug if entry else None) == expected
    # As the core's pick_tenant answers for the same tenants.
    picked = tenancy.pick_tenant([ROOT, TEAM, OTHER], host, path, scheme)
    assert (picked.slug if picked else None) == expected


def test_a_snapshot_knows_its_tenants_by_slug_and_the_paths_it_routes() -> None:
    source = NotReady("no secret")
    snapshot = Snapshot([ROOT, (TEAM, source), tenant("bare", "https://bare.test", "https://bare.test")])
    assert snapshot.entry("team") == Entry(attrs.evolve(TEAM, upstream=None), source)
    assert snapshot.entry("root") == Entry(ROOT, Static(UP))
    assert snapshot.entry("nobody") is None
    assert snapshot.resource_paths == ("/mcp", "/team/mcp")  # a resource at the root routes nothing
    with pytest.raises(ValueError, match="no upstream"):
        Snapshot([attrs.evolve(ROOT, upstream=None)])


def test_one_cache_remembers_places_and_a_new_snapshot_starts_afresh() -> None:
    assert not hasattr(tenancy, "_places")  # the core parses, the snapshot remembers
    directory = Directory([ROOT, TEAM])
    first = directory.current
    for _ in range(3):
        assert directory.current.pick("https", "shared.test", "/team/mcp").tenant.slug == "team"  # type: ignore[union-attr]
    info = first._picked.cache_info()
    assert (info.hits, info.misses, info.currsize) == (2, 1, 1)
    # The same place now belongs to another tenant: nothing remembered carries over.
    directory.replace([ROOT])
    assert directory.current is not first and directory.current._picked.cache_info().currsize == 0
    assert directory.current.pick("https", "shared.test", "/team/mcp").tenant.slug == "root"  # type: ignore[union-attr]
    assert first.pick("https", "shared.test", "/team/mcp").tenant.slug == "team"  # type: ignore[union-attr]


def test_replace_numbers_the_snapshots() -> None:
    directory = Directory([ROOT])
    assert directory.current.version == 0
    assert directory.replace([TEAM]).version == 1
    assert directory.replace([ROOT], version=7) is directory.current
    assert directory.current.version == 7 and [e.tenant.slug for e in directory.current.entries] == ["root"]


@attrs.define
class Moving:
    """A TenantSource as the database's will be: a version, read cheaply, and the set."""

    tenants: Sequence[Listed]
    at: int = 1
    loads: int = 0

    def version(self) -> int:
        return self.at

    def load(self) -> tuple[int, Sequence[Listed]]:
        self.loads += 1
        return self.at, self.tenants


def test_refresh_swaps_in_the_sources_set_only_once_its_version_moves() -> None:
    source = Moving([ROOT])
    directory = Directory(source)
    assert (directory.current.version, source.loads) == (1, 1)
    before = directory.current
    assert directory.refresh() is False and directory.current is before and source.loads == 1
    source.tenants, source.at = [ROOT, OTHER], 2
    assert directory.refresh() is True
    assert directory.current.version == 2 and directory.current.entry("other") is not None
    assert Directory(FixedTenants([ROOT])).refresh() is False


def test_concurrent_readers_see_one_whole_set_or_the_other() -> None:
    """Two sets of tenants on the same places, swapped back and forth while
    readers pick: every answer of one snapshot comes from one set (tenant
    and upstream source alike), and no reader goes back in versions."""
    def generation(name: str) -> list[Listed]:
        tag = Static(attrs.evolve(UP, client_id=name))
        return [(tenant(f"{name}-{host}", f"https://{host}.test"), tag) for host in ("a", "b", "c")]

    sets = {"even": generation("even"), "odd": generation("odd")}
    directory = Directory(sets["even"])
    stop = threading.Event()
    problems: list[str] = []

    def read() -> None:
        last = -1
        while not stop.is_set():
            snapshot = directory.current
            if snapshot.version < last:
                problems.append(f"version {snapshot.version} after {last}")
            last = snapshot.version
            want = "even" if snapshot.version % 2 == 0 else "odd"
            for host in ("a", "b", "c"):
                entry = snapshot.pick("https", f"{host}.test", "/mcp")
                if entry is None:
                    problems.append(f"v{snapshot.version}: nobody at {host}")
                elif entry.tenant.slug != f"{want}-{host}" or entry.source.upstream.client_id != want:  # type: ignore[attr-defined]
                    problems.append(f"v{snapshot.version}: {entry.tenant.slug}")

    readers = [threading.Thread(target=read) for _ in range(4)]
    for r in readers:
        r.start()
    for version in range(1, 2001):
        directory.replace(sets["odd" if version % 2 else "even"])
    stop.set()
    for r in readers:
        r.join()
    assert problems == []
    assert directory.current.version == 2000


def test_the_server_routes_by_the_current_snapshot() -> None:
    """A tenant swapped in is served at once: its resource path goes to the
    guard, its OAuth endpoints answer; one swapped out is gone."""
    site = Site([tenant("acme", "http://acme.test")], MemoryStore(), b"k" * 32, store_blocks=False)

    async def nothing(scope, receive, send):  # type: ignore[no-untyped-def]
        raise AssertionError("no request gets through without a token")

    app = ServerApp(site, OAuthApp(site), BearerGuard(nothing, site))

    async def get(host: str, path: str) -> int:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as c:
            return (await c.get(path)).status_code

    async def walk() -> None:
        assert await get("acme.test", "/mcp") == 401
        assert await get("beta.test", "/tools") == 404
        site.directory.replace([tenant("beta", "http://beta.test", "http://beta.test/tools")])
        assert await get("beta.test", "/tools") == 401  # the guard's
        assert await get("beta.test", "/.well-known/oauth-authorization-server") == 200
        assert await get("acme.test", "/mcp") == 404

    anyio.run(walk)
