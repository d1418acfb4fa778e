"""The tenant directory: which tenants this process serves, where each one's
upstream endpoints come from, and which tenant serves a request's host and
path.

A :class:`Snapshot` is one version of the whole set, never changed once
made: its tenants, their upstream sources, the places they live (parsed once
when the snapshot is made), the resource paths the server routes by, and the
one cache of answers to "which tenant serves this place". A
:class:`Directory` holds the current snapshot and replaces it whole
(:meth:`Directory.replace`): a reader takes ``directory.current`` once and
answers from it, so it sees the old set or the new one, never half of
each, and never an answer remembered from the other.

Where the tenants come from is a :class:`TenantSource`: today the
configuration file (:class:`FixedTenants`); a source that reads them from
the database plugs in the same way, and :meth:`Directory.refresh`, called
now and then, swaps in what it has once its version moves.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Sequence
from typing import Protocol, TypeGuard, Union, cast

import attrs

from .core.tenancy import Places, pick, places
from .core.tenant import Tenant
from .upstream.providers import Static, UpstreamSource


@attrs.frozen
class Entry:
    """A tenant, with the source of its upstream's endpoints."""

    tenant: Tenant
    source: UpstreamSource


# A tenant whose upstream is known (its endpoints used as they are), or one
# with the source its endpoints are resolved from (the tenant's own upstream
# is then None: flows that need it ask for it, core/upstream.py).
Listed = Union[Tenant, "tuple[Tenant, UpstreamSource]", Entry]

# Places (host and path) up to this length are remembered with their tenant:
# made-up places must not fill memory.
REMEMBERED_PLACE = 512
REMEMBERED_PLACES = 4096


def entry_of(item: Listed) -> Entry:
    if isinstance(item, Entry):
        return item
    if isinstance(item, tuple):
        tenant, source = item
        return Entry(attrs.evolve(tenant, upstream=None), source)
    if item.upstream is None:
        raise ValueError(f"tenant {item.slug!r}: no upstream, and no source to resolve it from")
    return Entry(item, Static(item.upstream))


class Snapshot:
    """One version of the set of tenants. Immutable; its pick cache is its own."""

    __slots__ = ("_by_slug", "_picked", "_placed", "entries", "resource_paths", "version")

    def __init__(self, entries: Iterable[Listed], version: int = 0) -> None:
        self.version = version
        self.entries: tuple[Entry, ...] = tuple(entry_of(e) for e in entries)
        by_slug: dict[str, Entry] = {}
        for e in self.entries:
            by_slug.setdefault(e.tenant.slug, e)
        self._by_slug = by_slug
        self._placed: tuple[tuple[Places, Entry], ...] = tuple((places(e.tenant), e) for e in self.entries)
        # The tenants' protected paths: the standalone server sends these
        # through the guard (app.ServerApp).
        self.resource_paths: tuple[str, ...] = tuple(
            e.tenant.resource_path for e in self.entries if e.tenant.resource_path)
        # The guard asks on every request, mostly about the same few places.
        self._picked = functools.lru_cache(maxsize=REMEMBERED_PLACES)(self._pick)

    def entry(self, slug: str) -> Entry | None:
        """The tenant with this slug (the first listed, should two share it)."""
        return self._by_slug.get(slug)

    def pick(self, scheme: str, host: str, path: str) -> Entry | None:
        """The tenant serving this place (core/tenancy.py ``pick``)."""
        if len(host) + len(path) > REMEMBERED_PLACE:
            return self._pick(scheme, host, path)
        return self._picked(scheme, host, path)

    def _pick(self, scheme: str, host: str, path: str) -> Entry | None:
        return pick(self._placed, host, path, scheme)


class TenantSource(Protocol):
    """Where a directory's tenants come from (the configuration file today,
    the database later). ``version`` is cheap and asked often
    (:meth:`Directory.refresh`); ``load`` reads the whole set."""

    def version(self) -> int:
        ...

    def load(self) -> tuple[int, Sequence[Listed]]:
        """The tenants, with the version they are at (read together)."""
        ...


@attrs.frozen
class FixedTenants:
    """Tenants that never change: the configuration file's."""

    tenants: Sequence[Listed]

    def version(self) -> int:
        return 0

    def load(self) -> tuple[int, Sequence[Listed]]:
        return 0, self.tenants


class Directory:
    """The current :class:`Snapshot`, replaced whole.

    ``current`` is a plain attribute, read once per request: assigning a
    reference is atomic, so a reader never sees a snapshot half made. Writers
    (:meth:`replace`, :meth:`refresh`) take turns."""

    def __init__(self, tenants: TenantSource | Iterable[Listed]) -> None:
        self.source: TenantSource = (
            tenants if _is_source(tenants) else FixedTenants(tuple(cast("Iterable[Listed]", tenants))))
        self._lock = threading.Lock()
        version, listed = self.source.load()
        self.current = Snapshot(listed, version)

    def replace(self, tenants: Iterable[Listed], version: int | None = None) -> Snapshot:
        """Serve this set of tenants from now on (``version``: the
        source's, else one more than the current one's; the next
        :meth:`refresh` then puts the source's set back)."""
        with self._lock:
            snapshot = Snapshot(tenants, self.current.version + 1 if version is None else version)
            self.current = snapshot
        return snapshot

    def refresh(self) -> bool:
        """Swap in the source's tenants if its version moved; whether it did."""
        if self.source.version() == self.current.version:
            return False
        version, listed = self.source.load()
        if version == self.current.version:
            return False
        self.replace(listed, version)
        return True


def _is_source(tenants: object) -> TypeGuard[TenantSource]:
    return callable(getattr(tenants, "load", None)) and callable(getattr(tenants, "version", None))
