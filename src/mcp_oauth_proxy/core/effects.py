"""Effects: what a flow asks the outside world to do, and the two drivers.

A flow is a generator: it yields effect objects, receives their results, and
returns a :class:`~.http.Response`. A failure in carrying out an effect is
thrown back into the flow, so ordinary try/except works inside the core. The
same flow runs under :func:`run_sync` (WSGI, CLI) and :func:`run_async`
(ASGI; asyncio and trio alike, since it awaits only what ``perform`` gives);
:func:`run_ready` runs it as far as memory answers, and either of those goes
on from there.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, ClassVar, Generator, Generic, TypeVar

import attrs

from .http import HttpRequest
from .models import (
    AccessToken,
    AuthSession,
    Client,
    CodeGrant,
    ConsentRequest,
    Grant,
    RefreshToken,
    UpstreamTokens,
)

T = TypeVar("T")
Flow = Generator["Effect", Any, T]


class Effect:
    """Base of every effect."""


@attrs.frozen
class Fetch(Effect):
    """Send an HTTP request upstream -> HttpResponse.
    Failures (refused, timeout, TLS) are thrown back as FetchFailed."""

    request: HttpRequest


@attrs.frozen
class ResolveUpstream(Effect):
    """The endpoints of a tenant's upstream (OIDC discovery, cached) ->
    Upstream. Failures are thrown back as UpstreamNotReady."""

    tenant: str


@attrs.frozen
class FetchClientMetadata(Effect):
    """Fetch a client metadata document from the client's own URL ->
    HttpResponse. The carrier guards against SSRF (https only, no redirects,
    no private or reserved addresses unless ``allow_loopback`` lets loopback
    through, small size), bounds the whole fetch by one deadline, and caches
    per Cache-Control (see core/cimd.py cache_seconds) under this effect, URL
    and policy together. Refusals are thrown back as FetchFailed whose
    message is safe to show the client; TooManyFetches when too many fetches
    are under way already, in all or for ``requester``."""

    url: str
    allow_loopback: bool
    # Who asked (Context.requester): not part of the answer, so not of the
    # effect's identity, which keys the cache.
    requester: str = attrs.field(default="", eq=False)


@attrs.frozen
class Audit(Effect):
    """Record a security event -> None. Never carries a token, code or secret."""

    event: str
    tenant: str
    client_id: str | None = None
    user_id: str | None = None
    detail: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class Sleep(Effect):
    """Wait a moment (waiting for another replica's upstream refresh) -> None."""

    seconds: float


class StoreEffect(Effect):
    """An effect carried out by calling one Store method with the effect's
    fields, in order, as arguments."""

    method: ClassVar[str]

    def apply(self, store: Any) -> Any:
        return getattr(store, self.method)(*attrs.astuple(self, recurse=False))


def _store_effect(method: str) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        cls.method = method  # type: ignore[attr-defined]
        return attrs.frozen(cls)

    return wrap


@_store_effect("save_client")
class SaveClient(StoreEffect):
    client: Client


@_store_effect("get_client")
class GetClient(StoreEffect):
    tenant: str
    client_id: str


@_store_effect("save_consent_request")
class SaveConsentRequest(StoreEffect):
    consent: ConsentRequest


@_store_effect("take_consent_request")
class TakeConsentRequest(StoreEffect):
    tenant: str
    id_hash: str
    now: int


@_store_effect("save_auth_session")
class SaveAuthSession(StoreEffect):
    session: AuthSession


@_store_effect("take_auth_session")
class TakeAuthSession(StoreEffect):
    tenant: str
    state_hash: str
    now: int


@_store_effect("save_grant_and_code")
class SaveGrantAndCode(StoreEffect):
    grant: Grant
    code: CodeGrant


@_store_effect("take_code")
class TakeCode(StoreEffect):
    tenant: str
    code_hash: str
    now: int


@_store_effect("revoke_grant_of_code")
class RevokeGrantOfCode(StoreEffect):
    tenant: str
    code_hash: str


@_store_effect("issue_tokens")
class IssueTokens(StoreEffect):
    tenant: str
    grant_id: str
    access: AccessToken
    refresh: RefreshToken | None


@_store_effect("get_access_token")
class GetAccessToken(StoreEffect):
    tenant: str
    token_hash: str


@_store_effect("get_refresh_token")
class GetRefreshToken(StoreEffect):
    tenant: str
    token_hash: str


@_store_effect("rotate_refresh_token")
class RotateRefreshToken(StoreEffect):
    tenant: str
    token_hash: str
    now: int
    grace: int
    access: AccessToken
    refresh: RefreshToken


@_store_effect("revoke_access_token")
class RevokeAccessToken(StoreEffect):
    tenant: str
    token_hash: str


@_store_effect("revoke_grant")
class RevokeGrant(StoreEffect):
    tenant: str
    grant_id: str


@_store_effect("get_grant")
class GetGrant(StoreEffect):
    tenant: str
    grant_id: str


@_store_effect("claim_upstream_refresh")
class ClaimUpstreamRefresh(StoreEffect):
    tenant: str
    grant_id: str
    version: int
    now: int
    lease_until: int


@_store_effect("release_upstream_refresh")
class ReleaseUpstreamRefresh(StoreEffect):
    tenant: str
    grant_id: str
    version: int


@_store_effect("update_upstream_tokens")
class UpdateUpstreamTokens(StoreEffect):
    tenant: str
    grant_id: str
    version: int
    tokens: UpstreamTokens


@_store_effect("mark_client_used")
class MarkClientUsed(StoreEffect):
    tenant: str
    client_id: str


@_store_effect("hit_counter")
class HitCounter(StoreEffect):
    key: str
    window_start: int
    expires_at: int


# -- drivers ---------------------------------------------------------------------


def _advance(flow: Flow[T], value: Any, error: BaseException | None) -> tuple[bool, Any]:
    """Resume the flow with a result or a failure: (True, its return value)
    once it has ended, else (False, the next effect)."""
    try:
        return False, (flow.send(value) if error is None else flow.throw(error))
    except StopIteration as stop:
        return True, stop.value


class WouldBlock(Exception):
    """Raised by a performer that answers only what it can at once (from
    memory): this effect needs the store or the network."""


@attrs.frozen
class Suspended(Generic[T]):
    """A flow stopped at an effect :func:`run_ready` could not carry out;
    :func:`run_sync` or :func:`run_async` go on from there (``pending``)."""

    flow: Flow[T]
    effect: Effect


def run_ready(flow: Flow[T], perform: Callable[[Effect], Any]) -> T | Suspended[T]:
    """Drive a flow as far as ``perform`` answers at once: its outcome, or,
    at the first effect ``perform`` refuses with WouldBlock, the suspended
    flow. The hot path's driver: the guard's answer for a token in memory
    costs no thread hop and no await; any other goes on where this stopped."""
    done, item = _advance(flow, None, None)
    while not done:
        try:
            value, error = perform(item), None
        except WouldBlock:
            return Suspended(flow, item)
        except Exception as exc:
            value, error = None, exc
        done, item = _advance(flow, value, error)
    return item  # type: ignore[no-any-return]


def _start(flow: Flow[T], pending: Effect | None) -> tuple[bool, Any]:
    return (False, pending) if pending is not None else _advance(flow, None, None)


def run_sync(flow: Flow[T], perform: Callable[[Effect], Any], pending: Effect | None = None) -> T:
    """Drive a flow to its end, carrying out each effect with ``perform``;
    ``pending``: the effect a suspended flow stopped at."""
    done, item = _start(flow, pending)
    while not done:
        try:
            value, error = perform(item), None
        except Exception as exc:  # thrown back into the flow
            value, error = None, exc
        done, item = _advance(flow, value, error)
    return item  # type: ignore[no-any-return]


async def run_async(flow: Flow[T], perform: Callable[[Effect], Awaitable[Any]], pending: Effect | None = None) -> T:
    """:func:`run_sync` for an async ``perform`` (asyncio or trio)."""
    done, item = _start(flow, pending)
    while not done:
        try:
            value, error = await perform(item), None
        except Exception as exc:
            value, error = None, exc
        done, item = _advance(flow, value, error)
    return item  # type: ignore[no-any-return]
