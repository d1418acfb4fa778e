"""What the ASGI and WSGI adapters share: the tenant directory, the store,
trusted proxies, and the flows that wrap the core's per request, with the
carrying out of ResolveUpstream by the source of the tenant picked."""

from __future__ import annotations

import ipaddress
import logging
import os
import traceback
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any
from urllib.parse import quote

from .. import metrics
from ..core.effects import (
    Effect,
    Flow,
    ResolveUpstream,
    StoreEffect,
    Suspended,
    WouldBlock,
    run_async,
    run_ready,
    run_sync,
)
from ..core.errors import EffectError, NoUpstreamTokens, TemporarilyUnavailable, UpstreamNotReady
from ..core.flows.guard import after_lookup, first_step, settle
from ..core.flows.upstream_token import NO_UPSTREAM_TOKENS, fresh_upstream_token
from ..core.http import Request, Response, json_response
from ..core.models import AccessToken, Principal
from ..core.router import handle
from ..core.store import AUDIT_RETENTION, Store, traits_of
from ..core.tenancy import beneath
from ..core.tenant import Upstream
from ..core.upstream import with_upstream
from ..directory import Directory, Listed, Snapshot
from ..directory import Entry as Entry  # importable from here too
from ..runtime import new_context, now_seconds
from ..upstream.client_metadata import DocumentFetcher
from ..upstream.egress import Egress, egress_from
from ..upstream.key_sets import KeySets

log = logging.getLogger("mcp_oauth_proxy")

PRINCIPAL_KEY = "mcp_oauth_proxy.principal"
UPSTREAM_TOKEN_KEY = "mcp_oauth_proxy.upstream_token"
# The access log's note (adapters/access_log.py): a dict in the scope, shared
# by the copies of the scope made on the way, where the guard names the
# client it let in.
ACCESS_NOTE_KEY = "mcp_oauth_proxy.access"
MAX_BODY = 1024 * 1024

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Site:
    """The tenants one app serves (its :class:`~..directory.Directory`, or
    the tenants to make one of), and how it trusts its callers."""

    def __init__(
        self,
        tenants: Directory | Iterable[Listed],
        store: Store,
        cookie_key: bytes,
        *,
        trusted_proxies: Iterable[str] = (),
        max_body: int = MAX_BODY,
        store_blocks: bool | None = None,
        documents: DocumentFetcher | None = None,
        audit_retention: int = AUDIT_RETENTION,
        key_sets: KeySets | None = None,
        egress: Egress | None = None,
    ) -> None:
        self.directory = tenants if isinstance(tenants, Directory) else Directory(tenants)
        self.store = store
        self.cookie_key = cookie_key
        self.trusted: tuple[Network, ...] = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)
        self.max_body = max_body
        # Whether store calls block: as the store's traits declare, unless overridden.
        self.store_blocks = traits_of(store).blocks if store_blocks is None else store_blocks
        # Client ID Metadata Documents: one fetcher, so one cache, per site.
        # How every outbound client of this site reaches out (upstream/egress.py);
        # embedded without one: the standard environment variables.
        self.egress = egress or egress_from(None, None, os.environ)
        self.documents = documents or DocumentFetcher(egress=self.egress)
        # Public keys of JWT signers (private_key_jwt clients, ID-JAG issuers): one cache per site.
        self.key_sets = key_sets or KeySets()
        # Seconds the flows' audit events are kept in the store.
        self.audit_retention = audit_retention
        # The guard's first drivers answer from memory only (see guard()):
        # a token the store remembers (its traits' ``remembered``:
        # storage/token_cache.py), else what a store that never blocks says.
        self._remembered = traits_of(store).remembered
        self._ready = ready_performer(store, self.store_blocks)

    # Each answers from the directory's current snapshot, read once.
    @property
    def entries(self) -> Sequence[Entry]:
        return self.directory.current.entries

    def entry(self, slug: str) -> Entry | None:
        """The tenant with this slug."""
        return self.directory.current.entry(slug)

    def pick(self, request: Request) -> Entry | None:
        return self.directory.current.pick(request.scheme, request.host, request.path)

    def pick_at(self, scheme: str, host: str, path: str) -> Entry | None:
        return self.directory.current.pick(scheme, host, path)

    def guard(self, view: GuardView, required_scopes: tuple[str, ...] | None,
              resource_only: bool = False, keep: Keep | None = None) -> GuardAnswer:
        """The guard's answer to a request to this site's protected
        resources: a 404 for a place no tenant serves, the RFC 9728 metadata
        at its well-known URL, else the tenant with the guard decision
        (core/flows/guard.py ``decide``) as far as memory answers it: a
        principal or a response, or the decision suspended at the token's
        lookup, for the caller's driver (run_async, run_sync) to finish.
        A token the store remembers is decided by ``decide``'s two halves
        called straight (``first_step``, ``settle``), without the flow's
        generator: the hot path.
        With ``resource_only``: None for a path the tenant picked does not
        protect (beneath its issuer, say: one of its OAuth endpoints).
        ``keep`` is given the verdicts that may be remembered
        (adapters/verdicts.py): a principal decided from a remembered
        token, a 401 to a request without credentials."""
        method, scheme, host, path, authorization, preflight = view
        snapshot = self.directory.current
        entry = snapshot.pick(scheme, host, path)
        if entry is None:
            return not_found()
        if is_resource_metadata(path, entry):
            # Made from the tenant alone: no effect to carry out.
            metadata = handle(Request(method, path, scheme=scheme, host=host),
                              new_context(entry.tenant, self.cookie_key))
            return run_sync(metadata, _no_effects)
        if resource_only and not beneath(path, entry.tenant.resource_path):
            return None
        tenant = entry.tenant
        step = first_step(method, authorization, preflight, tenant, required_scopes)
        if isinstance(step, Response):
            if keep is not None and authorization is None:
                keep(snapshot, entry, step, None)
            return entry, step
        now = now_seconds()
        if self._remembered is not None:
            record = self._remembered(step.tenant, step.token_hash)
            metrics.cache_lookup(record is not None)
            if record is not None:  # the hot path: no generator, no effect
                decision = settle(record, tenant, now, required_scopes)
                if keep is not None and not isinstance(decision, Response):
                    keep(snapshot, entry, decision, record)
                return entry, decision
        return entry, run_ready(after_lookup(step, tenant, now, required_scopes), self._ready)

    def trusts(self, peer: str | None) -> bool:
        if not peer or not self.trusted:
            return False
        try:
            address = ipaddress.ip_address(peer.split("%")[0])
        except ValueError:
            return False
        return any(address in network for network in self.trusted)

    def origin(self, peer: str | None, headers: Sequence[tuple[str, str]], scheme: str,
               host: str) -> tuple[str, str, str]:
        """(scheme, host, client address) of the public URL. X-Forwarded-*
        are believed only from a trusted proxy (RFC 9700 §4.13); the
        right-most value is the one that proxy added."""
        remote = peer or ""
        if not self.trusts(peer):
            return scheme, host, remote

        def last(name: str) -> str | None:
            values = [v for n, v in headers if n == name]
            if not values:
                return None
            return values[-1].split(",")[-1].strip() or None

        proto = last("x-forwarded-proto")
        if proto is not None and proto.lower() in ("http", "https"):
            scheme = proto.lower()
        host = last("x-forwarded-host") or host
        return scheme, host, last("x-forwarded-for") or remote


def _no_effects(effect: object) -> None:
    raise AssertionError(f"the resource metadata asked for {effect!r}")


def ready_performer(store: Store, store_blocks: bool) -> Callable[[Effect], Any]:
    """What run_ready may carry out at once: any effect of a store that
    never blocks (memory); else WouldBlock."""
    def perform(effect: Effect) -> Any:
        if not store_blocks and isinstance(effect, StoreEffect):
            return effect.apply(store)
        raise WouldBlock()

    return perform


def _resolve(entry: Entry, effect: ResolveUpstream, note: bool) -> Flow[Upstream]:
    # The source of the entry the request was picked with, never another
    # snapshot's: a tenant and its upstream come from one version of the set.
    if effect.tenant != entry.tenant.slug:
        raise UpstreamNotReady(f"tenant {effect.tenant}: not the tenant of this request")
    try:
        return (yield from entry.source.resolve())
    except UpstreamNotReady as exc:
        if note:
            log.warning("tenant %s: %s", entry.tenant.slug, exc)
        raise


def resolving(entry: Entry, perform: Callable[[Effect], Any], note: bool = True) -> Callable[[Effect], Any]:
    """``perform``, and ResolveUpstream carried out by ``entry``'s upstream
    source (whose discovery Fetch ``perform`` carries out); ``note``: log
    why it failed."""
    def perform_resolving(effect: Effect) -> Any:
        if isinstance(effect, ResolveUpstream):
            return run_sync(_resolve(entry, effect, note), perform)
        return perform(effect)

    return perform_resolving


def resolving_async(entry: Entry, perform: Callable[[Effect], Awaitable[Any]],
                    note: bool = True) -> Callable[[Effect], Awaitable[Any]]:
    """:func:`resolving` for an async ``perform``."""
    async def perform_resolving(effect: Effect) -> Any:
        if isinstance(effect, ResolveUpstream):
            return await run_async(_resolve(entry, effect, note), perform)
        return await perform(effect)

    return perform_resolving


class BodyTooLarge(Exception):
    """A request body over the adapter's cap (answered with a 413)."""


def declared_length(value: str | bytes) -> int | None:
    """What a Content-Length header says (RFC 9110 §8.6: ASCII digits only),
    or None if it says nothing readable. A number too long for ``int()`` is
    simply very large."""
    value = value.strip()
    if not value or not value.isascii() or not value.isdigit():
        return None
    significant = value.lstrip(b"0") if isinstance(value, bytes) else value.lstrip("0")
    return int(value) if len(significant) <= 18 else 10**18


def scope_list(scopes: Sequence[str] | None) -> tuple[str, ...] | None:
    """A guard's ``required_scopes`` as a tuple (it keys a cache of answers)."""
    if isinstance(scopes, str):
        raise TypeError("required_scopes: a list of scope names, not one string")
    return None if scopes is None else tuple(scopes)


def not_found() -> Response:
    return json_response({"error": "not_found", "error_description": "no tenant is served at this address"}, 404)


# Visible ASCII and the space (RFC 9110 §5.5: what a header value may hold
# unencoded; header_values.py), and what a log line may.
VISIBLE = "".join(chr(c) for c in range(0x20, 0x7F))


def loggable(text: str) -> str:
    """``text`` from a request, fit for a log line: its control characters
    (a newline would begin a forged line) and those beyond ASCII encoded."""
    return quote(text, safe=VISIBLE)


def server_error(where: str, exc: BaseException) -> Response:
    # Only the type and the stack: an exception's message could carry a value.
    frames = "".join(traceback.format_tb(exc.__traceback__))
    # ``where`` names the request (its decoded path, which a client chose).
    log.error("unexpected %s while answering %s\n%s", type(exc).__name__, loggable(where), frames)
    return json_response({"error": "server_error", "error_description": "an unexpected error occurred"}, 500)


def payload_too_large(limit: int) -> Response:
    return json_response({"error": "invalid_request", "error_description": f"the body is larger than {limit} bytes"},
                         413)


def oauth_flow(entry: Entry, request: Request, cookie_key: bytes) -> Flow[Response]:
    """The core's answer; it may ask for the tenant's upstream
    (ResolveUpstream: run it with :func:`resolving`)."""
    return handle(request, new_context(entry.tenant, cookie_key, request.remote_addr))


_PRM = "/.well-known/oauth-protected-resource"


def is_resource_metadata(path: str, entry: Entry) -> bool:
    # RFC 9728 §3.1 path insertion, and the root document clients fall back to.
    if not path.startswith(_PRM):
        return False
    return path in (_PRM, _PRM + entry.tenant.resource_path)


# (method, scheme, host, path, Authorization, whether a CORS preflight):
# what the guard reads of a request.
GuardView = tuple[str, str, str, str, "str | None", bool]
GuardAnswer = Response | None | tuple[Entry, Principal | Response | Suspended[Principal | Response]]
# Given a verdict that may be remembered: (the snapshot it was decided in,
# the tenant, the principal or response, the token's record if one decided it).
Keep = Callable[[Snapshot, Entry, Principal | Response, AccessToken | None], None]


def guard_view(request: Request) -> GuardView:
    return (request.method, request.scheme, request.host, request.path, request.header("authorization"),
            request.header("access-control-request-method") is not None)


def upstream_token_flow(entry: Entry, principal: Principal, cookie_key: bytes) -> Flow[str]:
    """A fresh upstream access token for a principal's grant. Raises
    OAuthError: InvalidToken (sign in again), TemporarilyUnavailable (try
    later), or NoUpstreamTokens for a principal that never signed in
    upstream here (a client acting for itself, a person admitted by an
    ID-JAG). Run it with :func:`resolving` (ResolveUpstream)."""
    if not principal.has_upstream_tokens:
        raise NoUpstreamTokens(NO_UPSTREAM_TOKENS)
    try:
        ctx = yield from with_upstream(new_context(entry.tenant, cookie_key))
        return (yield from fresh_upstream_token(principal.grant_id, ctx))
    except EffectError:  # UpstreamNotReady among them
        raise TemporarilyUnavailable("the identity provider is not available at the moment") from None
