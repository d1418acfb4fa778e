"""Effects: what a flow asks the outside world to do, and the two drivers.

A flow is a generator: it yields effect objects, receives their results, and
returns a :class:`~.http.Response`. A failure in carrying out an effect is
thrown back into the flow, so ordinary try/except works inside the core. The
same flow runs under :func:`run_sync` (WSGI, CLI) and :func:`run_async`
(ASGI; asyncio and trio alike, since it awaits only what ``perform`` gives);
:func:`run_ready` runs it as far as memory answers, and either of those goes
on from there.

The store operations are declared here too, each once (:class:`StoreEffect`):
the effect a flow yields is the operation's whole declaration (its
parameters, its answer type, its contract), from which :mod:`.store` derives
the ``Store`` protocol every backend implements.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import attrs

from .http import HttpRequest
from .models import (
    AccessToken,
    AdminToken,
    AuditEvent,
    AuthSession,
    Client,
    CodeGrant,
    ConsentRequest,
    DirectoryState,
    Grant,
    GrantInfo,
    OAuthConfig,
    Organization,
    Redemption,
    RefreshToken,
    Revocation,
    Rotation,
    Server,
    UpstreamTokens,
)

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:
    def dataclass_transform(**kwargs: Any) -> Any:
        return lambda decorator: decorator  # only a type checker reads it

T = TypeVar("T")
E = TypeVar("E", bound="StoreEffect[Any]")
Flow = Generator["Effect", Any, T]


class Effect:
    """Base of every effect."""


@attrs.frozen
class Fetch(Effect):
    """Send an HTTP request upstream -> HttpResponse.
    Failures (refused, timeout, TLS) are thrown back as FetchFailed.
    ``kind`` names the call for metrics (discovery, token, refresh, userinfo)."""

    request: HttpRequest
    kind: str = "upstream"


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
class ResolveKeys(Effect):
    """The public keys published at ``location`` -> list of JWK objects
    (dicts): a JWK Set's URL, or, with ``discover``, an issuer whose
    metadata (OIDC Discovery, else RFC 8414) names its ``jwks_uri``. Cached
    outside the core; ``refresh`` (a key id not among those cached) fetches
    them again unless they were fetched only moments ago. Its fetches are
    Fetch effects. Failures are thrown back as FetchFailed."""

    location: str
    discover: bool = False
    refresh: bool = False
    # The organization that chose the location: fetched only from public
    # addresses, or its networks (HttpRequest.public_only).
    public_only: str | None = None


@attrs.frozen
class Audit(Effect):
    """Record a security event -> None. Never carries a token, code or secret.
    ``kept``: the store operation that carried it (RotateRefreshToken's
    ``event``) has kept it already; it is only logged."""

    event: str
    tenant: str
    client_id: str | None = None
    user_id: str | None = None
    detail: tuple[tuple[str, str], ...] = ()
    kept: bool = False

    def at(self, now: int) -> AuditEvent:
        """The event as the store keeps it, happened at ``now``."""
        return AuditEvent(at=now, event=self.event, tenant=self.tenant, client_id=self.client_id,
                          user_id=self.user_id, detail=dict(self.detail))


@attrs.frozen
class Sleep(Effect):
    """Wait a moment (waiting for another replica's upstream refresh) -> None."""

    seconds: float


class StoreEffect(Effect, Generic[T]):
    """A store operation, declared once: the class is the effect a flow
    yields, and the declaration every backend implements.

    - its name gives the store method's (``TakeCode`` -> ``take_code``);
    - its fields, in order and by name, are that method's parameters (a
      field's default, the parameter's);
    - ``T`` (``StoreEffect[T]``) is the method's answer, and what
      :meth:`apply`, so what the flow receives, is typed as;
    - its docstring is the operation's contract (atomicity, precondition).

    :mod:`.store` derives the ``Store`` protocol from these declarations,
    and ``tests/storage/test_store_operations.py`` checks every backend
    against them (names, parameters, defaults, annotations).

    :meth:`apply` passes the fields by keyword, so a backend that orders
    its parameters otherwise, or two same-typed fields swapped in a
    declaration, can never silently exchange arguments: the names must
    agree or the call fails.
    """

    __slots__ = ()

    method: ClassVar[str]
    # The fields' names, in order (the method's parameters after self).
    parameters: ClassVar[tuple[str, ...]]
    # T, the operation's answer (for checks and documentation).
    answer: ClassVar[Any]
    if TYPE_CHECKING:
        # Set by attrs on every declared operation (store_operation).
        __attrs_attrs__: ClassVar[tuple[attrs.Attribute[Any], ...]]

    def apply(self, store: Any) -> T:
        """Call the store's method with this effect's fields as keywords."""
        answer: T = getattr(store, self.method)(**{name: getattr(self, name) for name in self.parameters})
        return answer


# Every store operation, in declaration order (filled by store_operation).
STORE_OPERATIONS: list[type[StoreEffect[Any]]] = []


def _method_name(cls_name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls_name).lower()


# Tells a type checker that a declared operation is a frozen attrs class
# (its fields, the constructor's parameters), as attrs.frozen does.
@dataclass_transform(frozen_default=True, field_specifiers=(attrs.field,))
def store_operation(cls: type[E]) -> type[E]:
    """Declare a store operation (see :class:`StoreEffect`): a frozen attrs
    class, registered in STORE_OPERATIONS, its method named after it."""
    frozen = attrs.frozen(cls)
    frozen.method = _method_name(cls.__name__)
    frozen.parameters = tuple(f.name for f in attrs.fields(frozen))
    (base,) = [b for b in getattr(cls, "__orig_bases__", ()) if typing.get_origin(b) is StoreEffect]
    (frozen.answer,) = typing.get_args(base)
    STORE_OPERATIONS.append(frozen)
    return frozen


# -- store operations ----------------------------------------------------------
# Each one ATOMIC domain operation that checks its own precondition; none is
# held open across an upstream call. Backends: mcp_oauth_proxy.storage.


@store_operation
class SaveClient(StoreEffect[None]):
    """Store a registered client, replacing one with its tenant and id."""

    client: Client


@store_operation
class GetClient(StoreEffect[Client | None]):
    """The client with this id in this tenant (exact match), lapsed or not
    until delete_expired removes it."""

    tenant: str
    client_id: str


@store_operation
class SaveConsentRequest(StoreEffect[None]):
    """Store the authorization request a consent page answers."""

    consent: ConsentRequest


@store_operation
class TakeConsentRequest(StoreEffect[ConsentRequest | None]):
    """Get and delete, only while unexpired: one answer per consent page."""

    tenant: str
    id_hash: str
    now: int


@store_operation
class SaveAuthSession(StoreEffect[None]):
    """Store the session of a login sent upstream (its PKCE verifier sealed)."""

    session: AuthSession


@store_operation
class TakeAuthSession(StoreEffect[AuthSession | None]):
    """Get and delete, only while unexpired: a state is used once."""

    tenant: str
    state_hash: str
    now: int


@store_operation
class SaveGrantAndCode(StoreEffect[None]):
    """Store a new grant (its upstream tokens sealed) with its one-time code."""

    grant: Grant
    code: CodeGrant


@store_operation
class SaveGrantAndToken(StoreEffect[None]):
    """Store a new grant made without a browser (client credentials, an
    ID-JAG: no code, no upstream tokens) with its one access token, together."""

    grant: Grant
    access: AccessToken


@store_operation
class GetCode(StoreEffect[CodeGrant | None]):
    """The code's grant while the code is unspent and unexpired; spends nothing."""

    tenant: str
    code_hash: str
    now: int


@store_operation
class TakeCode(StoreEffect[CodeGrant | None]):
    """Get and delete, only while unexpired: exactly one caller wins."""

    tenant: str
    code_hash: str
    now: int


@store_operation
class RevokeGrantOfCode(StoreEffect[bool]):
    """Revoke the grant a code was issued for (a replayed code,
    RFC 6749 §4.1.2). True if a grant was revoked."""

    tenant: str
    code_hash: str


@store_operation
class RedeemCode(StoreEffect[Redemption]):
    """Exchange a code for its grant's first tokens, in one transaction:
    spend the code (unexpired, of ``access.grant_id``) and, while its grant
    is live, store ``access`` and ``refresh``, keep the client for good
    (``keep_client``: its registration no longer lapses) and keep ``event``
    until ``keep_until`` (the performer's to set, as RotateRefreshToken's).
    ISSUED; SPENT: the code was gone (another request redeemed it, or it
    expired), nothing stored; REVOKED: the grant was revoked, the code is
    spent and nothing else stored. A failure commits nothing: the code
    stays good for the client's retry.
    """

    tenant: str
    code_hash: str
    now: int
    access: AccessToken
    refresh: RefreshToken | None
    keep_client: bool
    event: AuditEvent | None = None
    keep_until: int = 0


@store_operation
class GetAccessToken(StoreEffect[AccessToken | None]):
    """The token, unless it or its grant is revoked (expiry is the caller's)."""

    tenant: str
    token_hash: str


@store_operation
class GetRefreshToken(StoreEffect[RefreshToken | None]):
    """The token, rotated or not, unless its grant is revoked."""

    tenant: str
    token_hash: str


@store_operation
class RotateRefreshToken(StoreEffect[Rotation]):
    """Exchange a refresh token for its successors; a family never has
    more than one live refresh token.

    Current (never rotated): mark it rotated at ``now``, with ``refresh``
    as its successor; store both, ROTATED.
    Rotated no more than ``grace`` seconds ago (a client's retry) while
    its successor is still unused: that successor is marked REPLACED (a
    later use of it is reuse) and ``refresh`` takes its place; store
    both, ROTATED.
    Rotated earlier, or its successor already used: revoke its grant,
    REUSED (RFC 9700 §4.14.2).
    Unknown, expired, or grant revoked: GONE.

    ``event``: the rotation's audit event, kept in the same transaction
    when it ROTATED, until ``keep_until``: kept exactly when the rotation
    is, in one commit, not two. ``keep_until`` is the performer's to set,
    from the audit retention it keeps every event for (runtime.py).
    """

    tenant: str
    token_hash: str
    now: int
    grace: int
    access: AccessToken
    refresh: RefreshToken
    event: AuditEvent | None = None
    keep_until: int = 0


@store_operation
class RevokeAccessToken(StoreEffect[None]):
    """The token is valid no more. Every revoking operation (this one,
    RevokeGrant, RevokeGrantOfCode, a REUSED rotation) records what it
    revoked, in the same transaction, for RevocationsSince."""

    tenant: str
    token_hash: str


@store_operation
class RevokeGrant(StoreEffect[None]):
    """After this no token of the grant is valid and none can be issued."""

    tenant: str
    grant_id: str


@store_operation
class RevocationsSince(StoreEffect[list[Revocation]]):
    """What was revoked at or after ``since`` (Unix time, seconds; kept
    REVOCATION_RECORD seconds): what another process remembering tokens
    must forget. (Housekeeping's, not a flow's.)"""

    since: int


@store_operation
class GetGrant(StoreEffect[Grant | None]):
    """The grant with its upstream tokens decrypted, unless revoked."""

    tenant: str
    grant_id: str


@store_operation
class ClaimUpstreamRefresh(StoreEffect[bool]):
    """Take the lease to refresh the grant's upstream tokens, only if they
    are still at ``version`` and no unexpired lease is held."""

    tenant: str
    grant_id: str
    version: int
    now: int
    lease_until: int


@store_operation
class ReleaseUpstreamRefresh(StoreEffect[None]):
    """Give up a lease after a failed upstream refresh."""

    tenant: str
    grant_id: str
    version: int


@store_operation
class UpdateUpstreamTokens(StoreEffect[bool]):
    """Replace the upstream tokens, only if still at ``version``; bumps the
    version and clears the lease."""

    tenant: str
    grant_id: str
    version: int
    tokens: UpstreamTokens


@store_operation
class HitCounter(StoreEffect[int]):
    """Count one hit on ``key`` in the window starting at ``window_start``;
    the count in that window, this hit included (rate limits; shared by
    every replica using the store)."""

    key: str
    window_start: int
    expires_at: int


@store_operation
class EndSession(StoreEffect[None]):
    """Remember, for every replica, that the browser sign-in ``session_hash``
    (a hash of what its signed cookie holds) was signed out, until
    ``expires_at``, when its cookie expires anyway. (A signed cookie cannot
    be taken back: a copy of it stays good unless the server says no.)"""

    session_hash: str
    expires_at: int


@store_operation
class SessionEnded(StoreEffect[bool]):
    """Whether ``session_hash`` was signed out (EndSession) before its
    remembering expired at or before ``now``."""

    session_hash: str
    now: int


@store_operation
class WithdrawApprovals(StoreEffect[None]):
    """Remember, for every replica, that the approvals browsers remember of
    ``client_id`` (the consent cookie's) given at or before ``at`` count no
    more, until ``expires_at``, when every such cookie has expired anyway.
    (A browser's approval names no person: the person is known only after
    the upstream login that the approval lets begin.)"""

    tenant: str
    client_id: str
    at: int
    expires_at: int


@store_operation
class ApprovalsWithdrawn(StoreEffect[int | None]):
    """When the approvals of ``client_id`` were last withdrawn
    (WithdrawApprovals), if that is remembered at ``now``; else None."""

    tenant: str
    client_id: str
    now: int


@store_operation
class DeleteExpired(StoreEffect[int]):
    """Remove up to ``limit`` expired records of each kind; the count
    removed. (Housekeeping's, not a flow's.)"""

    now: int
    limit: int = 1000


# -- the directory in the database (organizations, OAuth configurations,
# servers). Every change is one transaction that also moves the directory's
# version, which every replica polls (DirectoryVersion) to reload
# (LoadDirectory). A refused precondition raises DirectoryRefused, naming
# what refused it. (The CLI's, and the tenant directory's, not a flow's.)


@store_operation
class CreateOrganization(StoreEffect[None]):
    """Add an organization; refused if its name is taken."""

    organization: Organization


@store_operation
class GetOrganization(StoreEffect[Organization | None]):
    """The organization with this name."""

    name: str


@store_operation
class ListOrganizations(StoreEffect[list[Organization]]):
    """Every organization, by name."""


@store_operation
class UpdateOrganization(StoreEffect[None]):
    """Replace an organization's settings (its name stays); refused if unknown."""

    organization: Organization


@store_operation
class DeleteOrganization(StoreEffect[None]):
    """Remove an organization, and its admin tokens with it (a later
    organization of its name inherits none); refused if unknown, or while it
    owns OAuth configurations or servers (naming them)."""

    name: str


@store_operation
class CreateOauthConfig(StoreEffect[None]):
    """Add an OAuth configuration (its client secret sealed, bound to its
    organization and name); refused if its organization is unknown or the
    name is taken there."""

    oauth_config: OAuthConfig


@store_operation
class GetOauthConfig(StoreEffect[OAuthConfig | None]):
    """The OAuth configuration, its client secret opened."""

    organization: str
    name: str


@store_operation
class ListOauthConfigs(StoreEffect[list[OAuthConfig]]):
    """The OAuth configurations (of one organization, or all), by
    organization and name, secrets opened."""

    organization: str | None = None


@store_operation
class UpdateOauthConfig(StoreEffect[None]):
    """Edit an OAuth configuration in place (a rotated secret, say): the
    grants made through it are kept. Refused if unknown."""

    oauth_config: OAuthConfig


@store_operation
class DeleteOauthConfig(StoreEffect[None]):
    """Remove an OAuth configuration; refused if unknown, or while a server
    uses it (naming the servers)."""

    organization: str
    name: str


@store_operation
class CreateServer(StoreEffect[None]):
    """Add a server; refused if its organization or OAuth configuration is
    unknown, or its slug, issuer or resource is another server's."""

    server: Server


@store_operation
class GetServer(StoreEffect[Server | None]):
    """The server with this slug."""

    slug: str


@store_operation
class ListServers(StoreEffect[list[Server]]):
    """The servers (of one organization, or all), by slug."""

    organization: str | None = None


@store_operation
class UpdateServer(StoreEffect[int]):
    """Replace a server's settings (slug and organization stay). Given
    another OAuth configuration, every live grant of the server is revoked
    with it, in the same transaction, and recorded for RevocationsSince
    (grants made through the old one must not outlive it; grants carry no
    configuration of their own, so all of the server's go): their count.
    Refused as CreateServer would be, or if unknown."""

    server: Server


@store_operation
class DeleteServer(StoreEffect[int]):
    """Remove a server and the clients registered to it, revoking (and
    recording) its live grants, so a server made later with its slug
    inherits none of them: the grants' count. Refused if unknown."""

    slug: str


@store_operation
class DirectoryVersion(StoreEffect[int]):
    """The directory's version: moves with every change above (0 before
    the first). Cheap: one row, read by every replica every second."""


@store_operation
class LoadDirectory(StoreEffect[DirectoryState]):
    """Every server with the OAuth configurations they use (secrets
    opened), and the version they are at, read together (the version
    first: what is read is never older than it says)."""


# -- administration (the admin API's and the CLI's, not a flow's) -------------


@store_operation
class CreateAdminToken(StoreEffect[None]):
    """Keep an admin token (its hash); refused (DirectoryRefused) if its
    organization is unknown, or its id or hash is another token's."""

    token: AdminToken


@store_operation
class GetAdminToken(StoreEffect[AdminToken | None]):
    """The admin token with this hash (exact match)."""

    token_hash: str


@store_operation
class ListAdminTokens(StoreEffect[list[AdminToken]]):
    """Every admin token, oldest first."""


@store_operation
class DeleteAdminToken(StoreEffect[bool]):
    """Remove the admin token with this id: it opens nothing after this.
    True if there was one."""

    token_id: str


@store_operation
class RecordAudit(StoreEffect[None]):
    """Append an event to the audit log (its event_id given by the store,
    increasing), kept until ``keep_until`` (delete_expired). An event of a
    tenant recorded without an organization gets the organization of the
    server with that slug, in the same statement: whoever owns the slug
    later does not see it."""

    event: AuditEvent
    keep_until: int


@store_operation
class ListAuditEvents(StoreEffect[list[AuditEvent]]):
    """Up to ``limit`` recorded events, newest first, with an event_id below
    ``before`` (the next page's cursor: the last event_id seen), matching
    every filter given. ``organization``: only events of that organization
    (as recorded);
    ``since`` and ``until``: ``at`` on or after the one, before the other."""

    limit: int
    before: int | None = None
    organization: str | None = None
    tenant: str | None = None
    user_id: str | None = None
    client_id: str | None = None
    event: str | None = None
    since: int | None = None
    until: int | None = None


@store_operation
class ListClients(StoreEffect[list[Client]]):
    """Up to ``limit`` clients registered in the tenant, by client_id, after
    ``after`` (the next page's cursor: the last client_id seen)."""

    tenant: str
    limit: int
    after: str | None = None


@store_operation
class ClientsLastUsed(StoreEffect[dict[str, int]]):
    """For each of these clients of the tenant that has a grant with a token
    issued, when its newest token was: client_id -> Unix time."""

    tenant: str
    client_ids: tuple[str, ...]


@store_operation
class DeleteClient(StoreEffect[int | None]):
    """Remove a registered client and revoke (and record, for
    RevocationsSince) its live grants, in one transaction: their count.
    None if there is no such client."""

    tenant: str
    client_id: str


@store_operation
class ListGrants(StoreEffect[list[GrantInfo]]):
    """Up to ``limit`` live grants (not revoked, unexpired at ``now``), by
    tenant and grant_id, after ``after`` (the next page's cursor: the last
    (tenant, grant_id) seen), matching every filter given.
    ``organization``: only grants of its servers."""

    now: int
    limit: int
    after: tuple[str, str] | None = None
    organization: str | None = None
    tenant: str | None = None
    user_id: str | None = None
    client_id: str | None = None


@store_operation
class GetGrantInfo(StoreEffect[GrantInfo | None]):
    """The grant, if live (not revoked, unexpired at ``now``); its upstream
    tokens are not read."""

    tenant: str
    grant_id: str
    now: int


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
        except Exception as exc:  # noqa: BLE001 - thrown back into the flow
            value, error = None, exc
        done, item = _advance(flow, value, error)
    result: T = item  # the flow's return value
    return result


def _start(flow: Flow[T], pending: Effect | None) -> tuple[bool, Any]:
    return (False, pending) if pending is not None else _advance(flow, None, None)


def run_sync(flow: Flow[T], perform: Callable[[Effect], Any], pending: Effect | None = None) -> T:
    """Drive a flow to its end, carrying out each effect with ``perform``;
    ``pending``: the effect a suspended flow stopped at."""
    done, item = _start(flow, pending)
    while not done:
        try:
            value, error = perform(item), None
        except Exception as exc:  # noqa: BLE001 - thrown back into the flow
            value, error = None, exc
        done, item = _advance(flow, value, error)
    result: T = item  # the flow's return value
    return result


async def run_async(flow: Flow[T], perform: Callable[[Effect], Awaitable[Any]], pending: Effect | None = None) -> T:
    """:func:`run_sync` for an async ``perform`` (asyncio or trio)."""
    done, item = _start(flow, pending)
    while not done:
        try:
            value, error = await perform(item), None
        except Exception as exc:  # noqa: BLE001 - thrown back into the flow
            value, error = None, exc
        done, item = _advance(flow, value, error)
    result: T = item  # the flow's return value
    return result
