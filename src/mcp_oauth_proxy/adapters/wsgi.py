"""WSGI: the OAuth endpoints of every tenant (:class:`OAuthWSGIApp`), and a
bearer guard in front of any WSGI app (:class:`BearerGuardWSGI`), for Flask,
Django, gunicorn and friends.

An authorized request reaches the wrapped app with two environ entries:

``environ["mcp_oauth_proxy.principal"]``
    the :class:`~mcp_oauth_proxy.core.flows.guard.Principal`;
``environ["mcp_oauth_proxy.upstream_token"]``
    ``() -> str``: the person's upstream access token, refreshed before it
    expires. Raises ``InvalidToken`` (sign in again) or
    ``TemporarilyUnavailable`` (its ``headers`` may carry a ``retry-after``),
    both :class:`~mcp_oauth_proxy.core.errors.OAuthError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus
from typing import Any

import attrs

from .. import metrics
from ..core.effects import Suspended, run_sync
from ..core.http import Request, Response
from ..core.models import Principal
from ..runtime import sync_performer
from ..upstream.http import SyncFetcher
from .header_values import sendable
from .paths import is_safe_path, refused_path
from .site import (
    PRINCIPAL_KEY,
    UPSTREAM_TOKEN_KEY,
    BodyTooLarge,
    Entry,
    Site,
    declared_length,
    guard_view,
    not_found,
    oauth_flow,
    payload_too_large,
    resolving,
    scope_list,
    server_error,
    upstream_token_flow,
)

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def _wsgi_str(value: str) -> str:
    # PEP 3333: environ strings are bytes decoded as latin-1.
    return value.encode("latin-1").decode("utf-8", "replace")


def _request(site: Site, environ: Environ) -> Request:
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append((key[5:].replace("_", "-").lower(), value))
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            headers.append((key.replace("_", "-").lower(), value))
    port = environ.get("SERVER_PORT", "")
    default_host = environ.get("SERVER_NAME", "localhost") + (f":{port}" if port else "")
    scheme, host, remote = site.origin(environ.get("REMOTE_ADDR"), headers, environ.get("wsgi.url_scheme", "http"),
                                       environ.get("HTTP_HOST") or default_host)
    return Request(
        method=environ.get("REQUEST_METHOD", "GET"),
        path=_wsgi_str(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")) or "/",
        query=environ.get("QUERY_STRING", ""),
        headers=tuple(headers),
        scheme=scheme,
        host=host,
        remote_addr=remote,
    )


def _read_body(environ: Environ, limit: int) -> bytes:
    length = declared_length(environ.get("CONTENT_LENGTH") or "")
    stream = environ["wsgi.input"]
    if length is not None:
        if length > limit:
            raise BodyTooLarge()
        return stream.read(length) if length else b""
    body: bytes = stream.read(limit + 1)
    if len(body) > limit:
        raise BodyTooLarge()
    return body


def _send(start_response: StartResponse, response: Response) -> list[bytes]:
    response = sendable(response)  # header values as they may be sent (header_values.py)
    reason = HTTPStatus(response.status).phrase if response.status in HTTPStatus._value2member_map_ else ""
    headers = list(response.headers) + [("content-length", str(len(response.body)))]
    start_response(f"{response.status} {reason}".strip(), headers)
    return [response.body]


def _perform(site: Site, upstream_timeout: float) -> Callable[[Any], Any]:
    return sync_performer(site.store, SyncFetcher(timeout=upstream_timeout, egress=site.egress),
                          fetch_document=site.documents.fetch, audit_retention=site.audit_retention,
                          resolve_keys=site.key_sets.resolve)


class OAuthWSGIApp:
    """Every OAuth endpoint of every tenant of ``site``; an unknown host gets a 404."""

    def __init__(self, site: Site, *, upstream_timeout: float = 10.0) -> None:
        self.site = site
        self._perform = _perform(site, upstream_timeout)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            response = self._answer(environ)
        except Exception as exc:  # noqa: BLE001 - answered 500
            response = server_error(f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}", exc)
        return _send(start_response, response)

    def _answer(self, environ: Environ) -> Response:
        request = _request(self.site, environ)
        entry = self.site.pick(request)
        if entry is None:
            return not_found()
        try:
            body = _read_body(environ, self.site.max_body)
        except BodyTooLarge:
            return payload_too_large(self.site.max_body)
        request = attrs.evolve(request, body=body)
        return run_sync(oauth_flow(entry, request, self.site.cookie_key), resolving(entry, self._perform))


class BearerGuardWSGI:
    """Wraps a WSGI app so it sees only requests with a valid access token;
    serves the RFC 9728 metadata; answers 401/403 with ``WWW-Authenticate``."""

    def __init__(self, app: WSGIApp, site: Site, *, required_scopes: Sequence[str] | None = None,
                 upstream_timeout: float = 10.0) -> None:
        self.app = app
        self.site = site
        self.required_scopes = scope_list(required_scopes)
        self._perform = _perform(site, upstream_timeout)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            verdict = self._verdict(environ)
        except Exception as exc:  # noqa: BLE001 - answered 500
            verdict = server_error(f"guard of {environ.get('PATH_INFO')}", exc)
        if isinstance(verdict, Response):
            return _send(start_response, verdict)
        entry, principal = verdict
        environ[PRINCIPAL_KEY] = principal
        environ[UPSTREAM_TOKEN_KEY] = self._token_getter(entry, principal)
        return self.app(environ, start_response)

    def _verdict(self, environ: Environ) -> Response | tuple[Entry, Principal]:
        request = _request(self.site, environ)
        if not is_safe_path(request.path):  # the tenant is picked by path: only one that says where it goes
            return refused_path()
        answer = self.site.guard(guard_view(request), self.required_scopes)
        assert answer is not None  # not resource_only: every path it wraps is protected
        if isinstance(answer, Response):
            return answer
        entry, decision = answer
        if isinstance(decision, Suspended):  # the token is not in memory
            decision = run_sync(decision.flow, self._perform, decision.effect)
        metrics.guard_decision(entry.tenant.slug, decision.status if isinstance(decision, Response) else None)
        return decision if isinstance(decision, Response) else (entry, decision)

    def _token_getter(self, entry: Entry, principal: Principal) -> Callable[[], str]:
        def upstream_token() -> str:
            return run_sync(upstream_token_flow(entry, principal, self.site.cookie_key),
                            resolving(entry, self._perform, note=False))

        return upstream_token
