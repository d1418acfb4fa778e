"""ASGI: the OAuth endpoints of every tenant (:class:`OAuthApp`), and a
bearer guard in front of any ASGI app (:class:`BearerGuard`).

Both run on asyncio and trio (anyio underneath). Store calls that block
(SQL backends) run in a worker thread, off the event loop.

An authorized request reaches the wrapped app with two scope entries:

``scope["mcp_oauth_proxy.principal"]``
    the :class:`~mcp_oauth_proxy.core.flows.guard.Principal` (user_id,
    client_id, scopes, tenant, ...);
``scope["mcp_oauth_proxy.upstream_token"]``
    ``async () -> str``: the person's upstream access token, refreshed before
    it expires. Raises ``InvalidToken`` (sign in again) or
    ``TemporarilyUnavailable`` (its ``headers`` may carry a ``retry-after``),
    both :class:`~mcp_oauth_proxy.core.errors.OAuthError`.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, NamedTuple, TypeVar, cast
from urllib.parse import quote

import anyio
import attrs

from .. import metrics
from ..core.effects import Effect, FetchClientMetadata, Suspended, run_async
from ..core.http import Request, Response
from ..core.models import AccessToken, Principal
from ..core.router import endpoint_name
from ..core.store import traits_of
from ..directory import Snapshot
from ..runtime import async_performer
from ..upstream.http import AsyncFetcher
from . import probes
from .header_values import sendable
from .paths import is_safe_path, refused_path
from .site import (
    ACCESS_NOTE_KEY,
    PRINCIPAL_KEY,
    UPSTREAM_TOKEN_KEY,
    BodyTooLarge,
    Entry,
    GuardView,
    Keep,
    Site,
    declared_length,
    guard_view,
    not_found,
    oauth_flow,
    payload_too_large,
    resolving_async,
    scope_list,
    server_error,
    upstream_token_flow,
)
from .verdicts import RequestKey, Verdict, Verdicts, request_key

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("mcp_oauth_proxy")


T = TypeVar("T")


class _Disconnected(Exception):
    pass


async def _unless_disconnected(receive: Receive, work: Callable[[], Awaitable[T]]) -> T:
    """``work``'s outcome, or _Disconnected as soon as the client goes away,
    ``work`` then cancelled. Only once the body has been read: from then on
    ``receive()`` gives nothing but ``http.disconnect`` (ASGI HTTP spec)."""
    outcome: list[tuple[T | None, Exception | None]] = []

    async def run(scope: anyio.CancelScope) -> None:
        try:
            outcome.append((await work(), None))
        except Exception as exc:  # noqa: BLE001 - handed back below, outside the task group
            outcome.append((None, exc))
        scope.cancel()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run, tasks.cancel_scope)
        while (await receive())["type"] != "http.disconnect":
            pass
        tasks.cancel_scope.cancel()
    if not outcome:
        raise _Disconnected()
    value, error = outcome[0]
    if error is not None:
        raise error
    return cast(T, value)  # work's answer: it raised nothing


def request_of(site: Site, scope: Scope) -> Request:
    """The core's view of an ASGI request (its body not read yet): the
    public scheme and host, and the client's address, as the site trusts them."""
    headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", ())]
    scheme, host, remote = _origin(site, scope, headers)
    return Request(
        method=scope.get("method", "GET"),  # websocket scopes have none
        path=scope["path"],
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=tuple(headers),
        scheme=scheme,
        host=host,
        remote_addr=remote,
    )


def origin_of(site: Site, scope: Scope) -> tuple[str, str, str]:
    """(scheme, host, client address) of a request as :func:`request_of`
    reads them, its other headers decoded only where a trusted proxy sent it."""
    client = scope.get("client")
    if site.trusts(client[0] if client else None):
        return _origin(site, scope, [(k.decode("latin-1").lower(), v.decode("latin-1"))
                                     for k, v in scope.get("headers", ())])
    hosts = [(b"host", v) for k, v in scope.get("headers", ()) if k.lower() == b"host"][:1]
    return _origin(site, scope, [(k.decode("latin-1"), v.decode("latin-1")) for k, v in hosts])


def _origin(site: Site, scope: Scope, headers: list[tuple[str, str]]) -> tuple[str, str, str]:
    # The first Host, else the address the server listens on.
    server = scope.get("server") or ("localhost", None)
    default_host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
    host = next((v for k, v in headers if k == "host"), default_host)
    client = scope.get("client")
    return site.origin(client[0] if client else None, headers, scope.get("scheme", "http"), host)


def raw_path(scope: Scope) -> str:
    """The request's path as sent, still percent-encoded (a server that
    gives no ``raw_path``: the decoded path, encoded again)."""
    raw = scope.get("raw_path")
    return raw.decode("latin-1") if raw else quote(scope["path"])


class Head(NamedTuple):
    """What the guard reads of a request's head."""

    host: bytes
    authorization: bytes | None
    preflight: bool  # a CORS preflight
    # Whether a body may follow (RFC 9112 §6.3: without Content-Length or
    # Transfer-Encoding an HTTP/1.x request has none).
    may_have_body: bool
    # What its verdict is remembered by (verdicts.py); None for OPTIONS,
    # whose verdict also hangs on whether it is a preflight.
    key: RequestKey | None


def guard_head(scope: Scope) -> Head | None:
    """What the guard reads of a request's head, straight from the scope,
    without building a whole Request; None where that would not read the
    same as :func:`request_of` (no Host, a repeated Host or Authorization)."""
    host = authorization = None
    preflight = framed = False
    for name, value in scope["headers"]:
        name = name.lower()  # ASGI servers send them lower-cased; a hand-made scope may not
        if name == b"host":
            if host is not None:
                return None
            host = value
        elif name == b"authorization":
            if authorization is not None:
                return None
            authorization = value
        elif name == b"content-length" or name == b"transfer-encoding":
            framed = True
        elif name == b"access-control-request-method":
            preflight = True
    if host is None:
        return None
    method = scope.get("method", "GET")
    key = None if method == "OPTIONS" else request_key(method, scope.get("scheme", "http"), host, scope["path"],
                                                          scope.get("raw_path"), authorization)
    # Made as a tuple is: Head(...) runs a Python __new__ (1 k instructions a request).
    return tuple.__new__(Head, (host, authorization, preflight,
                                framed or scope.get("http_version") not in ("1.0", "1.1"), key))


def _remembered_by(scope: Scope, head: Head | None) -> RequestKey | None:
    """The key a request's verdict is remembered by; None where none may be
    (the whole Request read, OPTIONS, a websocket)."""
    return None if head is None or scope["type"] != "http" else head.key


def _view(scope: Scope, head: Head) -> GuardView:
    host, authorization, preflight, _, _ = head
    # A websocket scope has no method.
    return (scope.get("method", "GET"), scope.get("scheme", "http"), host.decode("latin-1"), scope["path"],
            None if authorization is None else authorization.decode("latin-1"), preflight)


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length" and (declared_length(value) or 0) > limit:
            raise BodyTooLarge()
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected()
        body += message.get("body", b"")
        if len(body) > limit:
            raise BodyTooLarge()
        if not message.get("more_body", False):
            return bytes(body)


async def send_response(send: Send, response: Response) -> None:
    """A whole response, its length said (else the server would chunk it),
    its header values as they may be sent (header_values.py)."""
    global _last_sent
    last, headers = _last_sent
    if last() is not response:
        sent = sendable(response)
        if sent is not response:  # a value encoded, or a server error instead (rare): not remembered
            return await _send(send, sent, _asgi_headers(sent))
        headers = _asgi_headers(response)
        _last_sent = weakref.ref(response), headers
    await _send(send, response, headers)


def _asgi_headers(response: Response) -> list[tuple[bytes, bytes]]:
    headers = [(k.encode("latin-1"), v.encode("ascii")) for k, v in response.headers]
    headers.append((b"content-length", str(len(response.body)).encode("ascii")))
    return headers


async def _send(send: Send, response: Response, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": response.status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": response.body})


# The last answer sent (not kept alive here) and its ASGI headers: an answer
# sent again and again is one object (a tenant's 401, made once), and its
# headers are checked and encoded once.
_last_sent: tuple[Callable[[], Response | None], list[tuple[bytes, bytes]]] = (lambda: None, [])


async def refuse_websocket(send: Send) -> None:
    """Closed before it is accepted: the server answers the handshake with a 403 (ASGI spec)."""
    await send({"type": "websocket.close", "code": 1008})


async def answer_lifespan(receive: Receive, send: Send, close: Callable[[], Awaitable[None]]) -> None:
    """The ASGI lifespan protocol for an app that owns it: ready at once;
    ``close`` runs before shutdown is complete."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await close()
            await send({"type": "lifespan.shutdown.complete"})
            return


def closing_on_shutdown(receive: Receive, close: Callable[[], Awaitable[None]]) -> Receive:
    """``receive`` for a wrapped app that owns the lifespan: ``close`` runs
    when shutdown arrives, before the wrapped app sees it."""
    async def receive_and_close() -> MutableMapping[str, Any]:
        message = await receive()
        if message["type"] == "lifespan.shutdown":
            await close()
        return message

    return receive_and_close


class _Carriers:
    """Outbound HTTP for one app: pooled, made in the loop that uses it."""

    def __init__(self, site: Site, upstream_timeout: float) -> None:
        self.fetch = AsyncFetcher(timeout=upstream_timeout, egress=site.egress)
        self.perform = async_performer(site.store, self.fetch, store_blocks=site.store_blocks,
                                       fetch_document=site.documents.fetch_async,
                                       audit_retention=site.audit_retention, resolve_keys=site.key_sets.resolve)



class OAuthApp:
    """Every OAuth endpoint of every tenant of ``site``; the tenant is picked
    by Host (and issuer path). An unknown host gets a 404."""

    def __init__(self, site: Site, *, upstream_timeout: float = 10.0) -> None:
        self.site = site
        self._carriers = _Carriers(site, upstream_timeout)
        self._timeout = upstream_timeout

    async def probe(self, path: str) -> Response:
        """The answer to a liveness or readiness probe (probes.PATHS)."""
        return await probes.answer(path, self.site, self._carriers.perform, self._timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await answer_lifespan(receive, send, self._carriers.fetch.aclose)
        if scope["type"] == "websocket":
            return await refuse_websocket(send)  # no OAuth endpoint speaks WebSocket
        if scope["type"] != "http":
            return
        try:
            response = await self._answer(scope, receive)
        except _Disconnected:
            return
        except Exception as exc:  # noqa: BLE001 - answered 500, the connection kept
            response = server_error(f"{scope.get('method')} {scope.get('path')}", exc)
        await send_response(send, response)

    async def _answer(self, scope: Scope, receive: Receive) -> Response:
        request = request_of(self.site, scope)
        entry = self.site.pick(request)
        if entry is None:
            return not_found()
        try:
            body = await _read_body(scope, receive, self.site.max_body)
        except BodyTooLarge:
            return payload_too_large(self.site.max_body)
        request = attrs.evolve(request, body=body)
        response = await run_async(oauth_flow(entry, request, self.site.cookie_key),
                                   resolving_async(entry, self._watching(receive)))
        metrics.request(entry.tenant.slug, endpoint_name(request.path, entry.tenant), response.status)
        return response

    def _watching(self, receive: Receive) -> Callable[[Effect], Awaitable[Any]]:
        """The performer for one request: a client metadata document, fetched
        for whoever asked, is given up when they leave (other effects are
        carried out as they are, watching nothing)."""
        perform = self._carriers.perform

        async def perform_watching(effect: Effect) -> Any:
            if isinstance(effect, FetchClientMetadata):
                return await _unless_disconnected(receive, lambda: perform(effect))
            return await perform(effect)

        return perform_watching

    async def aclose(self) -> None:
        """Close pooled connections (done on lifespan shutdown)."""
        await self._carriers.fetch.aclose()


class BearerGuard:
    """Wraps an ASGI app (an MCP server) so it sees only requests with a valid
    access token of the tenant picked by Host; serves the RFC 9728 metadata;
    answers 401/403 with ``WWW-Authenticate`` (RFC 6750 §3, RFC 9728 §5.1).
    ``required_scopes`` overrides the tenant's."""

    def __init__(self, app: ASGIApp, site: Site, *, required_scopes: Sequence[str] | None = None,
                 upstream_timeout: float = 10.0, elsewhere: ASGIApp | None = None) -> None:
        self.app = app
        self.site = site
        self.required_scopes = scope_list(required_scopes)
        self._carriers = _Carriers(site, upstream_timeout)
        # Where a request goes whose tenant (picked by host and path) does
        # not protect its path: a server routing by path alone sends it
        # here when some tenant, on some host, protects that path.
        self.elsewhere = elsewhere
        self._verdicts = Verdicts(traits_of(site.store).memory)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            # The wrapped app owns the lifespan; close our pool on its shutdown.
            return await self.app(scope, closing_on_shutdown(receive, self._carriers.fetch.aclose), send)
        if kind not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        head, verdict = self.recall(scope)
        if verdict is not None:
            if isinstance(verdict.answer, Response):
                return await self.refuse(verdict, send)
            return await self.app(self.let_in(verdict, scope), receive, send)
        try:
            verdict_or_answer = await self._verdict(scope, head)
        except Exception as exc:  # noqa: BLE001 - answered 500, the connection kept
            verdict_or_answer = server_error(f"guard of {scope.get('path')}", exc)
        if verdict_or_answer is None:
            assert self.elsewhere is not None
            return await self.elsewhere(scope, receive, send)
        if isinstance(verdict_or_answer, Response):
            if kind == "websocket":
                return await refuse_websocket(send)
            await send_response(send, verdict_or_answer)
            return
        entry, principal = verdict_or_answer
        await self.app(self._admitted(scope, principal, self._token_getter(entry, principal)), receive, send)

    def recall(self, scope: Scope) -> tuple[Head | None, Verdict | None]:
        """What the guard reads of the request's head (None where the whole
        Request must be read: X-Forwarded-* may be believed, or the head is
        unusual), and the verdict remembered for it (verdicts.py), if any."""
        head = None if self.site.trusted else guard_head(scope)
        key = _remembered_by(scope, head)
        return head, None if key is None else self._verdicts.recall(key, self.site.directory.current)

    def let_in(self, verdict: Verdict, scope: Scope) -> Scope:
        """The scope the wrapped app sees under a remembered verdict that lets the request in."""
        metrics.remembered_decision(verdict.labels)
        return self._admitted(scope, verdict.answer, verdict.extra)  # type: ignore[arg-type]  # a principal

    async def refuse(self, verdict: Verdict, send: Send) -> None:
        """Answers under a remembered verdict that does not let the request in."""
        metrics.remembered_decision(verdict.labels)
        await send_response(send, verdict.answer)  # type: ignore[arg-type]  # a response

    def _keep(self, key: RequestKey) -> Keep:
        def keep(snapshot: Snapshot, entry: Entry, answer: Principal | Response, record: AccessToken | None) -> None:
            if isinstance(answer, Response):
                self._verdicts.keep_denial(key, snapshot, entry, answer)
            elif record is not None:
                self._verdicts.keep_principal(key, snapshot, entry, answer, record, self._token_getter(entry, answer))

        return keep

    @staticmethod
    def _admitted(scope: Scope, principal: Principal, upstream_token: Callable[[], Awaitable[str]]) -> Scope:
        """The scope the wrapped app sees: the principal and the upstream-token getter added."""
        note = scope.get(ACCESS_NOTE_KEY)
        if note is not None:
            note["client_id"] = principal.client_id
        return {**scope, PRINCIPAL_KEY: principal, UPSTREAM_TOKEN_KEY: upstream_token}

    async def _verdict(self, scope: Scope, head: Head | None) -> Response | tuple[Entry, Principal] | None:
        if not is_safe_path(raw_path(scope)):
            return refused_path()  # the tenant is picked by path: only one that says where it goes
        # X-Forwarded-* may be believed, or the head is unusual: the whole Request is read.
        view = guard_view(request_of(self.site, scope)) if head is None else _view(scope, head)
        key = _remembered_by(scope, head)
        keep = None if key is None else self._keep(key)
        answer = self.site.guard(view, self.required_scopes, resource_only=self.elsewhere is not None, keep=keep)
        if answer is None or isinstance(answer, Response):
            return answer
        entry, decision = answer
        if isinstance(decision, Suspended):  # the token is not in memory
            decision = await run_async(decision.flow, self._carriers.perform, decision.effect)
        if isinstance(decision, Response):
            metrics.guard_decision(entry.tenant.slug, decision.status)
            return decision
        metrics.guard_decision(entry.tenant.slug, None)
        return entry, decision

    async def aclose(self) -> None:
        await self._carriers.fetch.aclose()

    def _token_getter(self, entry: Entry, principal: Principal) -> Callable[[], Awaitable[str]]:
        async def upstream_token() -> str:
            flow = upstream_token_flow(entry, principal, self.site.cookie_key)
            # Finished even when the caller is cancelled (its client gone): a
            # refresh cut off after the upstream answered would lose the new
            # refresh token it rotated in, and with it the grant. The flow's
            # fetches and waits are bounded (upstream timeout, lease).
            with anyio.CancelScope(shield=True):
                token = await run_async(flow, resolving_async(entry, self._carriers.perform, note=False))
            return token

        return upstream_token
