"""A short memory of access-token lookups in front of any store.

The guard looks a token up on every request to the protected resource; most
of what that costs is the database round trip (and, under ASGI, the hop to a
worker thread), not the check. Remembering a found token for a few seconds
takes both off the hot path.

Revocation stays exact inside this process: every revoking operation that
goes through this wrapper forgets what it revoked before it returns. Other
processes sharing the database learn of it from the store's record of
revocations, which each reads every second (housekeeping.follow_revocations
calls :meth:`TokenCache.follow`): a revoked token is refused everywhere
within about a second, whatever the TTL. Expiry is unaffected: the core
checks it on every request against the record.

The wrapping is explicit: :class:`TokenCache` names the store operations it
overrides (the lookup, and every revoking one), and every other declared
operation (core/effects.py) is passed on to the wrapped store by
``core.store.forwarding``; nothing else of the store shows through (its
engine, say, is ``cache.store.engine``, or the pool in ``cache.traits``).
Its traits are the wrapped store's, with ``remembered`` and ``memory`` added.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import attrs

from ..core.effects import (
    DeleteClient,
    DeleteServer,
    GetAccessToken,
    RevokeAccessToken,
    RevokeGrant,
    RevokeGrantOfCode,
    RotateRefreshToken,
    UpdateServer,
)
from ..core.models import AccessToken, AuditEvent, RefreshToken, Revocation, Rotation, Server
from ..core.store import Store, StoreTraits, TokenMemory, forwarding, traits_of


@forwarding(to="store", overrides=(GetAccessToken, RevokeAccessToken, RevokeGrant, RevokeGrantOfCode,
                                   RotateRefreshToken, UpdateServer, DeleteServer, DeleteClient))
class TokenCache:
    """Wraps ``store``: the operations named above are this cache's, every
    other store operation is the store's own."""

    traits: StoreTraits

    def __init__(self, store: Store, ttl: float, size: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._ttl = ttl
        self._size = size
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], tuple[float, AccessToken]] = OrderedDict()
        # Counts revocations: a lookup that overlapped one does not remember
        # what it found, which may be what was just revoked.
        self._revocations = 0
        self.traits = attrs.evolve(traits_of(store), remembered=self.remembered,
                                    memory=TokenMemory(self._entries, clock))

    def remembered(self, tenant: str, token_hash: str, now: float | None = None) -> AccessToken | None:
        """The token, if it was found within the last TTL; never asks the
        store (the guard's first driver answers with this: adapters/site.py)."""
        now = self._clock() if now is None else now
        # One dict read is atomic under the GIL; the lock guards compound updates.
        hit = self._entries.get((tenant, token_hash))
        return hit[1] if hit is not None and hit[0] > now else None

    def get_access_token(self, tenant: str, token_hash: str) -> AccessToken | None:
        key = (tenant, token_hash)
        now = self._clock()
        remembered = self.remembered(tenant, token_hash, now)
        if remembered is not None:
            return remembered
        revocations = self._revocations
        token: AccessToken | None = self.store.get_access_token(tenant, token_hash)
        if token is not None:  # unknown tokens are never remembered
            with self._lock:
                if self._revocations != revocations:
                    return token
                self._entries[key] = (now + self._ttl, token)
                self._entries.move_to_end(key)
                while len(self._entries) > self._size:
                    self._entries.popitem(last=False)
        return token

    def _forget(self, match: Callable[[AccessToken], bool]) -> None:
        with self._lock:
            self._revocations += 1
            for key in [k for k, (_, t) in self._entries.items() if match(t)]:
                del self._entries[key]

    def follow(self, revoked: Iterable[Revocation]) -> None:
        """Forget what another process revoked."""
        tokens = {(r.tenant, r.revoked) for r in revoked if r.kind == Revocation.TOKEN}
        grants = {(r.tenant, r.revoked) for r in revoked if r.kind == Revocation.GRANT}
        if tokens or grants:
            self._forget(lambda t: (t.tenant, t.token_hash) in tokens or (t.tenant, t.grant_id) in grants)

    def forget_all(self) -> None:
        """Forget everything (what was revoked meanwhile is not known)."""
        self._forget(lambda t: True)

    def revoke_access_token(self, tenant: str, token_hash: str) -> None:
        self.store.revoke_access_token(tenant, token_hash)
        self._forget(lambda t: t.tenant == tenant and t.token_hash == token_hash)

    def revoke_grant(self, tenant: str, grant_id: str) -> None:
        self.store.revoke_grant(tenant, grant_id)
        self._forget(lambda t: t.tenant == tenant and t.grant_id == grant_id)

    def revoke_grant_of_code(self, tenant: str, code_hash: str) -> bool:
        revoked: bool = self.store.revoke_grant_of_code(tenant, code_hash)
        if revoked:
            # Which grant is not known here; a replayed code is rare enough
            # to forget the tenant's whole memory.
            self._forget(lambda t: t.tenant == tenant)
        return revoked

    def rotate_refresh_token(self, tenant: str, token_hash: str, now: int, grace: int, access: AccessToken,
                             refresh: RefreshToken, event: AuditEvent | None = None, keep_until: int = 0) -> Rotation:
        outcome: Rotation = self.store.rotate_refresh_token(tenant, token_hash, now, grace, access, refresh, event,
                                                            keep_until)
        if outcome is Rotation.REUSED:  # the grant was revoked with it
            self._forget(lambda t: t.tenant == tenant and t.grant_id == access.grant_id)
        return outcome

    def update_server(self, server: Server) -> int:
        revoked: int = self.store.update_server(server)
        if revoked:  # its grants went with the OAuth configuration it left
            self._forget(lambda t: t.tenant == server.slug)
        return revoked

    def delete_server(self, slug: str) -> int:
        revoked: int = self.store.delete_server(slug)
        self._forget(lambda t: t.tenant == slug)
        return revoked

    def delete_client(self, tenant: str, client_id: str) -> int | None:
        revoked: int | None = self.store.delete_client(tenant, client_id)
        self._forget(lambda t: t.tenant == tenant and t.client_id == client_id)
        return revoked
