"""The admin API: JSON over HTTP under ``/admin/api/v1/``, on the admin
listener only (``server.admin_listen``), sans-IO: :meth:`AdminApi.handle`
turns a parsed request into a response, calling the operations
(admin/operations.py) on a blocking store; the ASGI app (admin/asgi.py)
runs it in a worker thread.

Every request but the OpenAPI document's carries ``Authorization: Bearer
mcp_admin_…``. Errors are RFC 9457 problem details
(``application/problem+json``); lists are paginated with ``limit`` and
``cursor`` (the ``next_cursor`` of the page before).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import attrs

from ..adapters.site import loggable
from ..core.errors import DecryptionFailed, DirectoryRefused, OAuthError, StorageUnavailable
from ..core.http import Request, Response, media_type, parse_json, parse_params
from ..directory import Entry
from . import openapi
from .operations import (
    Actor,
    AdminError,
    Invalid,
    Management,
    Page,
    audit_doc,
    client_doc,
    config_doc,
    file_server_doc,
    grant_doc,
    invalid,
    organization_doc,
    server_doc,
    text_problem,
)
from .tokens import authenticate

log = logging.getLogger("mcp_oauth_proxy.admin")

PREFIX = "/admin/api/v1"
PROBLEM = "application/problem+json"
_HEADERS = (("cache-control", "no-store"), ("x-content-type-options", "nosniff"))


def problem(status: int, detail: str, **extra: Any) -> Response:
    """An RFC 9457 problem: ``about:blank``, so its title is the status's phrase (§4.2.1)."""
    doc = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail, **extra}
    headers: tuple[tuple[str, str], ...] = (("content-type", PROBLEM),) + _HEADERS
    if status == 401:
        headers += (("www-authenticate", 'Bearer realm="admin"'),)
    return Response(status, headers, json.dumps(doc, ensure_ascii=False).encode("utf-8"))


def _json(doc: Any, status: int = 200, *headers: tuple[str, str]) -> Response:
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(status, (("content-type", "application/json"),) + _HEADERS + headers, body)


def _page(page: Page, doc: Callable[[Any], dict[str, Any]]) -> Response:
    return _json({"items": [doc(i) for i in page.items], "next_cursor": page.next})


@attrs.frozen
class Call:
    """One request, as a route's handler sees it."""

    actor: Actor
    params: tuple[str, ...]  # the path's variable segments, decoded
    query: Mapping[str, str]
    body: Mapping[str, Any]

    def number(self, name: str) -> int | None:
        value = self.query.get(name)
        if value is None:
            return None
        if not _whole(value):
            raise invalid(name, "must be a whole number")
        return int(value)


Handler = Callable[[Management, Call], Response]


def _whole(value: str) -> bool:
    """ASCII digits, few enough for the database's integers ("²" is a digit to str.isdigit)."""
    return value.isascii() and value.isdigit() and len(value) <= 18


@attrs.frozen
class Route:
    method: str
    path: str  # segments; "{x}" is a variable
    handler: Handler
    summary: str
    query: tuple[str, ...] = ()  # the query parameters it takes

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.strip("/").split("/"))


_PAGING = ("limit", "cursor")


def _limit(call: Call) -> int | None:
    return call.number("limit")


def _created(doc: dict[str, Any], location: str) -> Response:
    return _json(doc, 201, ("location", PREFIX + location))


# -- organizations


def _orgs(m: Management, c: Call) -> Response:
    return _page(m.organizations(c.actor, _limit(c), c.query.get("cursor")), organization_doc)


def _org_create(m: Management, c: Call) -> Response:
    values = dict(c.body)
    name = _required_string(values, "name")
    o = m.create_organization(c.actor, name, values)
    return _created(organization_doc(o), f"/organizations/{o.name}")


def _org(m: Management, c: Call) -> Response:
    return _json(organization_doc(m.organization(c.actor, c.params[0])))


def _org_update(m: Management, c: Call) -> Response:
    return _json(organization_doc(m.update_organization(c.actor, c.params[0], c.body)))


def _org_delete(m: Management, c: Call) -> Response:
    m.delete_organization(c.actor, c.params[0])
    return _json({"deleted": c.params[0]})


# -- OAuth configurations


def _configs(m: Management, c: Call) -> Response:
    page = m.oauth_configs(c.actor, c.query.get("organization"), _limit(c), c.query.get("cursor"))
    return _page(page, config_doc)


def _config_create(m: Management, c: Call) -> Response:
    values = dict(c.body)
    organization = _required_string(values, "organization")
    name = _required_string(values, "name")
    made = m.create_oauth_config(c.actor, organization, name, values)
    return _created(config_doc(made), f"/oauth-configs/{made.organization}/{made.name}")


def _config(m: Management, c: Call) -> Response:
    return _json(config_doc(m.oauth_config(c.actor, *c.params)))


def _config_update(m: Management, c: Call) -> Response:
    return _json(config_doc(m.update_oauth_config(c.actor, c.params[0], c.params[1], c.body)))


def _config_delete(m: Management, c: Call) -> Response:
    m.delete_oauth_config(c.actor, *c.params)
    return _json({"deleted": "/".join(c.params)})


# -- servers


def _servers(m: Management, c: Call) -> Response:
    return _page(m.servers(c.actor, c.query.get("organization"), _limit(c), c.query.get("cursor")), dict)


def _server_create(m: Management, c: Call) -> Response:
    values = dict(c.body)
    slug = _required_string(values, "slug")
    organization = _required_string(values, "organization")
    s = m.create_server(c.actor, slug, organization, values)
    return _created(server_doc(s), f"/servers/{s.slug}")


def _server(m: Management, c: Call) -> Response:
    s = m.server(c.actor, c.params[0])
    return _json(file_server_doc(s) if isinstance(s, Entry) else server_doc(s))


def _server_update(m: Management, c: Call) -> Response:
    if "organization" in c.body:
        raise invalid("organization", "a server's organization cannot change")
    s, revoked = m.update_server(c.actor, c.params[0], c.body)
    return _json({**server_doc(s), "revoked_grants": revoked})


def _server_delete(m: Management, c: Call) -> Response:
    return _json({"deleted": c.params[0], "revoked_grants": m.delete_server(c.actor, c.params[0])})


# -- registered clients


def _clients(m: Management, c: Call) -> Response:
    page = m.clients(c.actor, c.params[0], _limit(c), c.query.get("cursor"))
    used = m.clients_last_used(c.params[0], page.items)
    return _page(page, lambda client: client_doc(client, used.get(client.client_id)))


def _client_create(m: Management, c: Call) -> Response:
    client, secret = m.create_machine_client(c.actor, c.params[0], c.body)
    doc = client_doc(client)
    if secret is not None:
        doc["client_secret"] = secret  # shown this once; only its hash is kept
    return _created(doc, f"/servers/{c.params[0]}/clients/{client.client_id}")


def _client(m: Management, c: Call) -> Response:
    client = m.client(c.actor, *c.params)
    return _json(client_doc(client, m.clients_last_used(c.params[0], [client]).get(client.client_id)))


def _client_delete(m: Management, c: Call) -> Response:
    revoked = m.delete_client(c.actor, *c.params)
    return _json({"deleted": c.params[1], "revoked_grants": revoked})


# -- grants and the audit log


def _grants(m: Management, c: Call) -> Response:
    q = c.query
    page = m.grants(c.actor, server=q.get("server"), user_id=q.get("user_id"), client_id=q.get("client_id"),
                    limit=_limit(c), after=q.get("cursor"))
    return _page(page, grant_doc)


def _grant_revoke(m: Management, c: Call) -> Response:
    g = m.revoke_grant(c.actor, *c.params)
    return _json({"revoked": grant_doc(g)})


def _audit(m: Management, c: Call) -> Response:
    q = c.query
    cursor = q.get("cursor")
    if cursor is not None and not _whole(cursor):
        raise invalid("cursor", "not a cursor this list gave")
    page = m.audit_events(c.actor, server=q.get("server"), user_id=q.get("user_id"),
                          client_id=q.get("client_id"), event=q.get("event"), since=c.number("since"),
                          until=c.number("until"), limit=_limit(c), before=None if cursor is None else int(cursor))
    return _page(page, audit_doc)


ROUTES: tuple[Route, ...] = (
    Route("GET", "/organizations", _orgs, "List organizations", _PAGING),
    Route("POST", "/organizations", _org_create, "Create an organization (global tokens only)"),
    Route("GET", "/organizations/{name}", _org, "Show an organization"),
    Route("PATCH", "/organizations/{name}", _org_update, "Change an organization's display name"),
    Route("DELETE", "/organizations/{name}", _org_delete,
          "Delete an organization that owns nothing (global tokens only)"),
    Route("GET", "/oauth-configs", _configs, "List OAuth configurations (secrets shown as 'set')",
          ("organization", *_PAGING)),
    Route("POST", "/oauth-configs", _config_create, "Create an OAuth configuration"),
    Route("GET", "/oauth-configs/{organization}/{name}", _config, "Show an OAuth configuration"),
    Route("PATCH", "/oauth-configs/{organization}/{name}", _config_update,
          "Edit an OAuth configuration in place (its grants are kept)"),
    Route("DELETE", "/oauth-configs/{organization}/{name}", _config_delete,
          "Delete an OAuth configuration no server uses (409 names the servers that do)"),
    Route("GET", "/servers", _servers, "List servers (file-managed ones read-only)", ("organization", *_PAGING)),
    Route("POST", "/servers", _server_create, "Create a server; every replica serves it within 2 s"),
    Route("GET", "/servers/{slug}", _server, "Show a server"),
    Route("PATCH", "/servers/{slug}", _server_update,
          "Change a server; another oauth_config revokes the grants made through the old one"),
    Route("DELETE", "/servers/{slug}", _server_delete, "Delete a server, revoking its grants"),
    Route("GET", "/servers/{slug}/clients", _clients, "List the clients registered to a server", _PAGING),
    Route("POST", "/servers/{slug}/clients", _client_create,
          "Register a client without a browser (client credentials, ID-JAG); its secret is shown once"),
    Route("GET", "/servers/{slug}/clients/{client_id}", _client, "Show a registered client"),
    Route("DELETE", "/servers/{slug}/clients/{client_id}", _client_delete,
          "Delete a registered client, revoking its grants"),
    Route("GET", "/grants", _grants, "List live grants by server, person or client",
          ("server", "user_id", "client_id", *_PAGING)),
    Route("DELETE", "/grants/{server}/{grant_id}", _grant_revoke,
          "Revoke a grant: its tokens are refused on every replica within 2 s"),
    Route("GET", "/audit", _audit, "List audit events, newest first",
          ("server", "user_id", "client_id", "event", "since", "until", *_PAGING)),
)


def _required_string(values: dict[str, Any], name: str) -> str:
    value = values.pop(name, None)
    if not isinstance(value, str):
        raise invalid(name, "required, a string")
    return value


def _match(segments: Sequence[str]) -> tuple[list[Route], tuple[str, ...]]:
    """The routes whose path matches, and the variable segments' values."""
    found: list[Route] = []
    params: tuple[str, ...] = ()
    for route in ROUTES:
        pattern = route.segments
        if len(pattern) == len(segments) and all(p.startswith("{") or p == s
                                                 for p, s in zip(pattern, segments, strict=True)):
            found.append(route)
            params = tuple(s for p, s in zip(pattern, segments, strict=True) if p.startswith("{"))
    return found, params


@attrs.define
class AdminApi:
    management: Management

    def handle(self, request: Request) -> Response:
        """Answers a request whose path starts with PREFIX; ``request.path``
        is the raw (still percent-encoded) path."""
        try:
            return self._handle(request)
        except AdminError as refused:
            extra = {"errors": [attrs.asdict(e) for e in refused.errors]} if isinstance(refused, Invalid) else {}
            return problem(refused.status, str(refused), **extra)
        except DirectoryRefused as refused:  # a change another one raced
            return problem(409, str(refused))
        except StorageUnavailable:
            return problem(503, "the database is unavailable; try again")
        except DecryptionFailed:
            return problem(500, "a stored client secret does not open with this server's key ring: "
                                "restore the key it was sealed with (see `keys`)")
        except Exception:
            log.exception("admin API: %s %s failed", request.method, loggable(request.path.split("?")[0]))
            return problem(500, "the server failed; the error is in its log")

    def _handle(self, request: Request) -> Response:
        rest = request.path[len(PREFIX):]
        if rest == "/openapi.json" and request.method in ("GET", "HEAD"):
            return _json(openapi.document(ROUTES))
        try:
            segments = [unquote(s, errors="strict") for s in rest.strip("/").split("/")]
        except UnicodeDecodeError:
            return problem(404, "no such resource")
        if any(text_problem(s) for s in segments):  # no name holds a control character
            return problem(404, "no such resource")
        routes, params = _match(segments)
        if not routes:
            return problem(404, "no such resource")
        route = next((r for r in routes if r.method == request.method), None)
        if route is None:
            allowed = ", ".join(r.method for r in routes)
            return problem(405, f"allowed: {allowed}").with_headers(("allow", allowed))
        actor = authenticate(self.management.store, request.header("authorization"))
        if actor is None:
            return problem(401, "a valid admin token is required (Authorization: Bearer mcp_admin_…)")
        try:
            raw_query = parse_params(request.query)
        except (ValueError, OAuthError):  # a repeated parameter, an escape that is not UTF-8
            raise invalid("query", "not a valid query string: each parameter once, in UTF-8") from None
        unknown = sorted(set(raw_query) - set(route.query))
        if unknown:
            raise invalid(unknown[0], "unknown query parameter")
        query = {k: v[0] for k, v in raw_query.items()}
        bad = next((k for k, v in query.items() if text_problem(v)), None)
        if bad is not None:
            raise invalid(bad, text_problem(query[bad]) or "")
        return route.handler(self.management, Call(actor, params, query, self._body(request)))

    @staticmethod
    def _body(request: Request) -> Mapping[str, Any]:
        if request.method not in ("POST", "PATCH"):
            return {}
        if media_type(request.header("content-type")) != "application/json":
            raise _Unsupported()
        try:
            body = parse_json(request.body)
        except ValueError:
            raise invalid("body", "not valid JSON") from None
        if not isinstance(body, dict):
            raise invalid("body", "must be a JSON object")
        return body


class _Unsupported(AdminError):
    status = 415

    def __init__(self) -> None:
        super().__init__("the body must be application/json")
