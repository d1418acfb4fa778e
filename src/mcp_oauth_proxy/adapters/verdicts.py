"""The guard's verdicts, remembered by the request they answered: the hot
path of :class:`~.asgi.BearerGuard` (and of the standalone server's app,
which asks before it routes).

A request whose method, scheme, Host, path and Authorization are those of
an earlier one gets the earlier one's verdict, while all it was decided
from still holds:

- the tenant directory's snapshot (the same object: a tenant changed,
  added or removed makes a new one, and every verdict of the old one is
  forgotten);
- the token cache's record of the token (the same object, in the same
  entry: a revocation forgets it, and once its TTL lapses the cache
  fetches a new one), so a verdict never outlives the memory it came
  from, and revocation stays as exact as the cache's
  (storage/token_cache.py);
- the decision's own clock (``guard.holds_until``), on the wall clock as
  the guard reads it.

Only two answers are kept: a principal, decided from a record the token
cache remembered, and a tenant's 401 to a request without credentials. A
refusal of a token is not (the cache never remembers unknown tokens either,
and a client could otherwise fill this memory with tokens of its own), nor
an answer at a place (host and path) much longer than the tenant
directory remembers one (``REMEMBERED_PLACE``): made-up places fill no
memory.

The Authorization value is kept only as two 64-bit hashes, Python's own
(SipHash, keyed at random when the process starts unless PYTHONHASHSEED
fixes it), of the value and of the value with a suffix drawn at random
when the process starts: never the token. A value that is not the token
equals it on both only by chance (2^-128 a try): guessing one needs the
token, as it does without this memory.
"""

from __future__ import annotations

import os
import time
from collections.abc import Hashable
from typing import Any

from .. import metrics
from ..core.flows.guard import holds_until
from ..core.http import Response
from ..core.models import AccessToken, Principal
from ..core.store import TokenMemory
from ..directory import REMEMBERED_PLACE, Entry, Snapshot

# Verdicts kept at most; past that all are forgotten at once (a flood of
# places a client made up costs the others a lookup each, never the memory).
SIZE = 10_000
_SUFFIX = os.urandom(16)

RequestKey = tuple[Hashable, ...]


def request_key(method: str, scheme: str, host: bytes, path: str, raw_path: Any,
                authorization: bytes | None) -> RequestKey | None:
    """What a verdict is remembered by: everything the guard reads of a
    request, the Authorization value only as its two hashes; None for a
    place too long to remember: its host and path, as sent and as decoded,
    longer than twice what the tenant directory remembers of a place."""
    # The method too: h11 takes any token as one (a review kept 60 KB methods).
    if len(method) + len(host) + len(path) + len(raw_path or b"") > 2 * REMEMBERED_PLACE:
        return None
    if authorization is None:
        return (method, scheme, host, path, raw_path)
    return (method, scheme, host, path, raw_path, hash(authorization), hash(authorization + _SUFFIX))


class Verdict:
    """A verdict and what it was decided from. ``answer``: the principal,
    or the response; ``extra``: what the adapter made of it once (the
    upstream-token getter), kept with it; ``remembered``: the token
    cache's entry of the token that decided it, and its key there;
    ``expires``: when the token expires (wall clock)."""

    __slots__ = ("answer", "entry", "expires", "extra", "labels", "remembered", "remembered_as")

    def __init__(self, entry: Entry, answer: Principal | Response, extra: Any = None,
                 remembered: tuple[float, AccessToken] | None = None, remembered_as: tuple[str, str] = ("", ""),
                 expires: float = float("inf")) -> None:
        self.entry = entry
        self.answer = answer
        self.extra = extra
        self.remembered = remembered
        self.remembered_as = remembered_as
        self.expires = expires
        # How it is counted (metrics.remembered_decision).
        self.labels = metrics.guard_labels(entry.tenant.slug, answer.status if isinstance(answer, Response) else None)


class Verdicts:
    """One guard's remembered verdicts, all of one snapshot of the tenant
    directory. ``memory``: the token cache's (StoreTraits); None (a store
    that remembers nothing): only 401s are kept."""

    def __init__(self, memory: TokenMemory | None, size: int = SIZE) -> None:
        self._memory = memory
        self._size = size
        self._snapshot: Snapshot | None = None
        self._kept: dict[RequestKey, Verdict] = {}

    def recall(self, key: RequestKey, snapshot: Snapshot) -> Verdict | None:
        """The verdict kept for this request, if all it was decided from still holds."""
        if snapshot is not self._snapshot:  # the tenants changed: every verdict goes
            self._kept = {}
            self._snapshot = snapshot
            return None
        kept = self._kept.get(key)
        if kept is None:
            return None
        remembered = kept.remembered
        if remembered is not None:
            memory = self._memory
            assert memory is not None  # nothing was remembered without it
            if (memory.entries.get(kept.remembered_as) is not remembered or memory.clock() >= remembered[0]
                    or time.time() >= kept.expires):
                return None
        return kept

    def keep_denial(self, key: RequestKey, snapshot: Snapshot, entry: Entry, answer: Response) -> None:
        """Keeps a tenant's answer to a request without credentials."""
        if snapshot is self._snapshot:
            self._keep(key, Verdict(entry, answer))

    def keep_principal(self, key: RequestKey, snapshot: Snapshot, entry: Entry, principal: Principal,
                       record: AccessToken, extra: Any) -> None:
        """Keeps a principal decided from ``record``, while the token memory
        holds that record as it did (``record`` as the tenant's)."""
        memory = self._memory
        if memory is None or snapshot is not self._snapshot:
            return
        remembered_as = (entry.tenant.slug, record.token_hash)
        remembered = memory.entries.get(remembered_as)
        if remembered is None or remembered[1] is not record:
            return  # forgotten or replaced since it was read: decided afresh next time
        self._keep(key, Verdict(entry, principal, extra, remembered, remembered_as, holds_until(record)))

    def _keep(self, key: RequestKey, verdict: Verdict) -> None:
        if len(self._kept) >= self._size:
            self._kept = {}
        self._kept[key] = verdict
