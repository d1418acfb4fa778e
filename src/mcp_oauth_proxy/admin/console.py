"""The operators' console: server-rendered pages under ``/admin/`` on the
admin listener, beside the admin API and built on the same operations
(admin/operations.py), so a form is accepted or refused exactly as the API
would, its errors shown next to their fields.

No JavaScript: every action is a form. The pages' Content-Security-Policy
allows the console's own stylesheet and nothing else; every POST carries a
CSRF token bound to the session cookie (console_session.py) and must come
from the console's own origin; sign-in is rate limited per address.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from importlib import resources
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

import attrs
import jinja2

from .. import config as config_mod
from ..adapters.site import loggable
from ..core.errors import DecryptionFailed, DirectoryRefused, OAuthError, StorageUnavailable
from ..core.http import Request, Response, parse_json, parse_params
from ..core.models import CLIENT_CREDENTIALS, JWT_BEARER
from ..directory import Entry
from . import console_session as session
from .discovery_check import Check, check_discovery
from .operations import (
    MAX_PAGE,
    Actor,
    AdminError,
    Conflict,
    FieldError,
    Invalid,
    Management,
    NotFound,
    text_problem,
)
from .tokens import authenticate

log = logging.getLogger("mcp_oauth_proxy.admin")

PREFIX = "/admin"
# Sign-in attempts an address may make each minute.
SIGN_IN_ATTEMPTS = 10

_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'")
_HEADERS = (
    ("content-type", "text/html; charset=utf-8"),
    ("content-security-policy", _CSP),
    ("x-frame-options", "DENY"),
    # Same-origin: form posts carry our Origin, which is checked.
    ("referrer-policy", "same-origin"),
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
)
_NOTICES = {
    "created": "Created.", "saved": "Saved.", "deleted": "Deleted.", "revoked": "Revoked.",
    "signed-out": "Signed out.",
}

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("mcp_oauth_proxy.admin", "templates"),
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
)


def _css() -> bytes:
    return resources.files("mcp_oauth_proxy.admin").joinpath("static/console.css").read_bytes()


_STYLESHEET = _css()


def _when(t: int | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _see_other(location: str, *headers: tuple[str, str]) -> Response:
    return Response(303, (("location", location), ("cache-control", "no-store")) + headers)


@attrs.frozen
class _Page:
    """One request, as a page handler sees it."""

    request: Request
    actor: Actor
    csrf: str
    query: Mapping[str, str]
    form: Mapping[str, str]


@attrs.define
class Console:
    management: Management
    key: bytes  # console_session.console_key
    check: Callable[[Any], Check] = check_discovery
    clock: Callable[[], float] = time.time

    # -- the front door --

    def late(self) -> Response:
        """The page when an answer takes too long (the database, a check)."""
        return self._error(503, "No answer in time", "The server took too long to answer: try again.")

    def handle(self, request: Request) -> Response:
        try:
            return self._handle(request)
        except StorageUnavailable:
            return self._error(503, "The database is unavailable", "Try again in a moment.")
        except (DecryptionFailed, DirectoryRefused) as failure:
            return self._error(409, "Refused", str(failure))
        except Exception:
            log.exception("console: %s %s failed", request.method, loggable(request.path))
            return self._error(500, "The console failed", "The error is in the server's log.")

    def _handle(self, request: Request) -> Response:
        path = request.path
        if path == PREFIX + "/static/console.css":
            return Response(200, (("content-type", "text/css; charset=utf-8"), ("cache-control", "max-age=3600"),
                                  ("x-content-type-options", "nosniff")), _STYLESHEET)
        secure = request.scheme == "https"
        if request.method not in ("GET", "POST"):
            # Forms send GET and POST only; every other method is refused
            # before it can act without the checks a POST gets.
            return Response(405, _HEADERS + (("allow", "GET, POST"),), b"")
        if request.method == "POST" and not self._same_origin(request):
            return self._error(403, "Refused", "This form was not sent from the console.")
        if path == PREFIX + "/sign-in":
            return self._sign_in(request, secure)
        cookie = request.cookies().get(session.cookie_name(secure))
        actor = session.session_actor(self.key, cookie, int(self.clock()), self.management.store)
        if actor is None or cookie is None:
            if request.method == "POST":
                return self._error(401, "Signed out", "Your session ended: sign in again.")
            return _see_other(PREFIX + "/sign-in", session.clear_cookie(secure))
        csrf = session.csrf_token(self.key, cookie)
        form: dict[str, str] = {}
        if request.method == "POST":
            form = self._form(request)
            if not session.csrf_ok(self.key, cookie, form.get("csrf")):
                return self._error(403, "Refused", "This form is stale or was not sent from the console: "
                                                   "reload the page and try again.")
        if path == PREFIX + "/sign-out" and request.method == "POST":
            session.end_session(cookie, self.management.store)
            self.management.audit(actor, "console_signed_out")
            return _see_other(PREFIX + "/sign-in?notice=signed-out", session.clear_cookie(secure))
        try:
            query = {k: v[0] for k, v in parse_params(request.query).items()}
            segments = [unquote(s, errors="strict") for s in path[len(PREFIX):].strip("/").split("/")]
        except (ValueError, OAuthError):
            return self._error(400, "Bad request", "The address is not one the console made.", actor, csrf)
        if any(text_problem(s) or text_problem(v) for s in segments for v in query.values()):
            return self._error(404, "Not found", "There is no such page.", actor, csrf)
        page = _Page(request, actor, csrf, query, form)
        try:
            return self._route(page, [s for s in segments if s])
        except NotFound as missing:
            return self._error(404, "Not found", str(missing), actor, csrf)
        except AdminError as refused:
            return self._error(refused.status, "Refused", str(refused), actor, csrf)

    @staticmethod
    def _same_origin(request: Request) -> bool:
        origin = request.header("origin")
        return origin is None or origin == f"{request.scheme}://{request.host}"

    @staticmethod
    def _form(request: Request) -> dict[str, str]:
        try:
            return {k: v[-1] for k, v in parse_params(request.body.decode("utf-8")).items()}
        except (ValueError, UnicodeDecodeError, OAuthError):
            return {}

    def _render(self, template: str, page: _Page | None, title: str, status: int = 200,
                headers: tuple[tuple[str, str], ...] = (), notice: str | None = None, **values: Any) -> Response:
        if notice is None and page is not None:
            notice = page.query.get("notice")
        body = _templates.get_template(template).render(
            title=title, actor=page.actor if page else None, csrf=page.csrf if page else "",
            notice=_NOTICES.get(notice or ""), problem=values.pop("problem", None), **values)
        return Response(status, _HEADERS + headers, body.encode("utf-8"))

    def _error(self, status: int, title: str, detail: str, actor: Actor | None = None, csrf: str = "") -> Response:
        page = None if actor is None else _Page(Request("GET", PREFIX), actor, csrf, {}, {})
        return self._render("error.html", page, title, status, problem=detail, section="")

    # -- signing in and out --

    def _sign_in(self, request: Request, secure: bool) -> Response:
        if request.method == "GET":
            try:
                notice = {k: v[0] for k, v in parse_params(request.query).items()}.get("notice")
            except OAuthError:  # a repeated or undecodable parameter: no notice
                notice = None
            return self._render("sign_in.html", None, "Sign in", errors={}, section="", notice=notice)
        now = int(self.clock())
        window = now - now % 60
        hits = self.management.store.hit_counter(key=f"admin-sign-in:{request.remote_addr}", window_start=window,
                                                 expires_at=window + 120)
        if hits > SIGN_IN_ATTEMPTS:
            return self._render("sign_in.html", None, "Sign in", 429, (("retry-after", str(window + 60 - now)),),
                                errors={}, section="", problem="Too many attempts: wait a minute.")
        token = self._form(request).get("token", "").strip()
        actor = authenticate(self.management.store, f"Bearer {token}")
        if actor is None:
            return self._render("sign_in.html", None, "Sign in", 401, errors={"token": "not a valid admin token"},
                                section="")
        value = session.new_session(self.key, actor.name, now)
        self.management.audit(actor, "console_signed_in")
        return _see_other(PREFIX + "/servers", session.set_cookie(value, secure))

    # -- the pages --

    def _route(self, page: _Page, segments: list[str]) -> Response:
        get = page.request.method == "GET"  # else POST: its CSRF token and Origin are checked
        match segments:
            case []:
                return _see_other(PREFIX + "/servers")
            case ["organizations"]:
                return self._organizations(page) if get else self._organization_create(page)
            case ["oauth-configs"] if get:
                return self._configs(page)
            case ["oauth-configs", "+new"]:
                return self._config_new(page)
            case ["oauth-configs", org, name]:
                return self._config_edit(page, org, name)
            case ["oauth-configs", org, name, "check"] if not get:
                return self._config_check(page, org, name)
            case ["oauth-configs", org, name, "delete"] if not get:
                self.management.delete_oauth_config(page.actor, org, name)
                return _see_other(PREFIX + "/oauth-configs?notice=deleted")
            case ["servers"] if get:
                return self._servers(page)
            case ["servers", "+new"]:
                return self._server_new(page)
            case ["servers", slug]:
                return self._server_edit(page, slug)
            case ["servers", slug, "delete"] if not get:
                self.management.delete_server(page.actor, slug)
                return _see_other(PREFIX + "/servers?notice=deleted")
            case ["servers", slug, "clients"] if get:
                return self._clients(page, slug)
            case ["servers", slug, "clients", "+new"]:
                return self._machine_client_new(page, slug)
            case ["servers", slug, "clients", client_id, "delete"] if not get:
                self.management.delete_client(page.actor, slug, client_id)
                return _see_other(f"{PREFIX}/servers/{quote(slug)}/clients?notice=deleted")
            case ["grants"] if get:
                return self._grants(page)
            case ["grants", server, grant_id, "revoke"] if not get:
                self.management.revoke_grant(page.actor, server, grant_id)
                back = {k: v for k, v in page.form.items() if k in ("server", "user_id", "client_id") and v}
                return _see_other(f"{PREFIX}/grants?{urlencode({**back, 'notice': 'revoked'})}")
            case ["audit"] if get:
                return self._audit(page)
        raise NotFound("There is no such page.")

    # organizations

    def _organizations(self, page: _Page, errors: Mapping[str, str] = {}, status: int = 200) -> Response:
        items = self.management.organizations(page.actor, MAX_PAGE).items
        return self._render("organizations.html", page, "Organizations", status, items=items, errors=errors,
                            values=page.form, section="organizations")

    def _organization_create(self, page: _Page) -> Response:
        values = {"display_name": page.form["display_name"]} if page.form.get("display_name") else {}
        try:
            self.management.create_organization(page.actor, page.form.get("name", ""), values)
        except (Invalid, Conflict) as refused:
            return self._organizations(page, _field_errors(refused, "name"), refused.status)
        return _see_other(PREFIX + "/organizations?notice=created")

    # OAuth configurations

    def _configs(self, page: _Page) -> Response:
        items = self.management.oauth_configs(page.actor, None, MAX_PAGE).items
        return self._render("oauth_configs.html", page, "OAuth configurations", items=items,
                            section="oauth-configs")

    def _config_form(self, page: _Page, title: str, action: str, values: Mapping[str, Any], creating: bool,
                     errors: Mapping[str, str] = {}, status: int = 200, secret_set: bool = False,
                     check: Check | None = None, problem: str | None = None) -> Response:
        organizations = [o.name for o in self.management.organizations(page.actor, MAX_PAGE).items]
        return self._render("oauth_config_form.html", page, title, status, action=action, values=values,
                            creating=creating, errors=errors, secret_set=secret_set, check=check,
                            organizations=organizations, kinds=[k for k in config_mod.KINDS if k != config_mod.DEV],
                            problem=problem, section="oauth-configs")

    def _config_new(self, page: _Page) -> Response:
        action = PREFIX + "/oauth-configs/+new"
        if page.request.method == "GET":
            return self._config_form(page, "New OAuth configuration", action, {"pkce": True}, True)
        values = _config_values(page.form, creating=True)
        try:
            self.management.create_oauth_config(page.actor, page.form.get("organization", ""),
                                                page.form.get("name", ""), values)
        except (Invalid, Conflict) as refused:
            return self._config_form(page, "New OAuth configuration", action, _shown(page.form), True,
                                     _field_errors(refused, "name"), refused.status)
        return _see_other(PREFIX + "/oauth-configs?notice=created")

    def _config_edit(self, page: _Page, org: str, name: str) -> Response:
        c = self.management.oauth_config(page.actor, org, name)
        action = f"{PREFIX}/oauth-configs/{quote(org)}/{quote(name)}"
        title = f"OAuth configuration {org}/{name}"
        if page.request.method == "GET":
            return self._config_form(page, title, action, _config_shown(c), False, secret_set=bool(c.client_secret))
        try:
            self.management.update_oauth_config(page.actor, org, name, _config_values(page.form, creating=False))
        except (Invalid, Conflict) as refused:
            return self._config_form(page, title, action, _shown(page.form), False, _field_errors(refused, "kind"),
                                     refused.status, secret_set=bool(c.client_secret))
        return _see_other(action + "?notice=saved")

    def _config_check(self, page: _Page, org: str, name: str) -> Response:
        c = self.management.oauth_config(page.actor, org, name)
        action = f"{PREFIX}/oauth-configs/{quote(org)}/{quote(name)}"
        return self._config_form(page, f"OAuth configuration {org}/{name}", action, _config_shown(c), False,
                                 secret_set=bool(c.client_secret), check=self.check(c))

    # servers

    def _servers(self, page: _Page) -> Response:
        items = self.management.servers(page.actor, None, MAX_PAGE).items
        return self._render("servers.html", page, "Servers", items=items, section="servers")

    def _server_form(self, page: _Page, title: str, action: str, values: Mapping[str, Any], creating: bool,
                     errors: Mapping[str, str] = {}, status: int = 200, problem: str | None = None) -> Response:
        organizations = [o.name for o in self.management.organizations(page.actor, MAX_PAGE).items]
        configs = self.management.oauth_configs(page.actor, None if creating else values.get("organization"),
                                                MAX_PAGE).items
        names = sorted({c.name for c in configs})
        return self._render("server_form.html", page, title, status, action=action, values=values,
                            creating=creating, errors=errors, organizations=organizations, configs=names,
                            problem=problem, section="servers")

    def _server_new(self, page: _Page) -> Response:
        action = PREFIX + "/servers/+new"
        if page.request.method == "GET":
            return self._server_form(page, "New server", action, {"scopes": "mcp"}, True)
        try:
            self.management.create_server(page.actor, page.form.get("slug", ""), page.form.get("organization", ""),
                                          _server_values(page.form, creating=True))
        except (Invalid, Conflict) as refused:
            return self._server_form(page, "New server", action, _shown(page.form), True,
                                     _field_errors(refused, "slug"), refused.status,
                                     problem=str(refused) if isinstance(refused, Conflict) else None)
        return _see_other(PREFIX + "/servers?notice=created")

    def _server_edit(self, page: _Page, slug: str) -> Response:
        found = self.management.server(page.actor, slug)
        if isinstance(found, Entry):
            raise Conflict(f"server {slug!r} is file-managed (read-only here): change it in the configuration file")
        action = f"{PREFIX}/servers/{quote(slug)}"
        title = f"Server {slug}"
        if page.request.method == "GET":
            return self._server_form(page, title, action, _server_shown(found), False)
        values = _server_values(page.form, creating=False)
        switching = values.get("oauth_config", found.oauth_config) != found.oauth_config
        if switching and page.form.get("confirmed") != values["oauth_config"]:
            # Say what the switch revokes before it does.
            live = self.management.grants(page.actor, server=slug, limit=MAX_PAGE)
            count = f"more than {MAX_PAGE}" if live.next else str(len(live.items))
            kept = {k: v for k, v in page.form.items() if k not in ("csrf", "confirmed")}
            return self._render("confirm_switch.html", page, f"Switch {slug}'s OAuth configuration?",
                                action=action, slug=slug, old=found.oauth_config, new=values["oauth_config"],
                                count=count, values=kept, section="servers")
        try:
            self.management.update_server(page.actor, slug, values)
        except (Invalid, Conflict) as refused:
            shown = {**_shown(page.form), "slug": slug, "organization": found.organization}
            return self._server_form(page, title, action, shown, False, _field_errors(refused, "issuer"),
                                     refused.status, problem=str(refused) if isinstance(refused, Conflict) else None)
        return _see_other(action + "?notice=saved")

    # clients, grants, the audit log

    def _clients(self, page: _Page, slug: str) -> Response:
        listed = self.management.clients(page.actor, slug, 100, page.query.get("cursor"))
        used = self.management.clients_last_used(slug, listed.items)
        items = [{"client_name": c.client_name, "client_id": c.client_id, "created": _when(c.created_at),
                  "hosts": ", ".join(sorted({urlsplit(u).hostname or u for u in c.redirect_uris})),
                  "last_used": _when(used.get(c.client_id)) or "not yet",
                  "delete": f"{PREFIX}/servers/{quote(slug)}/clients/{quote(c.client_id, safe='')}/delete"}
                 for c in listed.items]
        return self._render("clients.html", page, f"Clients registered to {slug}", items=items, next=listed.next,
                            new=f"{PREFIX}/servers/{quote(slug)}/clients/+new", section="servers")

    def _machine_client_new(self, page: _Page, slug: str) -> Response:
        """A client without a browser (client credentials, ID-JAG): its
        secret is shown on the page that answers the form, once, and never
        again (kept only as its hash); no redirect carries it."""
        action = f"{PREFIX}/servers/{quote(slug)}/clients/+new"
        title = f"New machine client of {slug}"
        self.management.server(page.actor, slug)  # one the actor sees, else 404
        if page.request.method == "GET":
            return self._render("machine_client_form.html", page, title, action=action, errors={},
                                values={"grant_client_credentials": True}, methods=_MACHINE_METHODS,
                                section="servers")
        try:
            client, secret = self.management.create_machine_client(page.actor, slug, _machine_values(page.form))
        except Invalid as refused:
            return self._render("machine_client_form.html", page, title, refused.status, action=action,
                                errors=_field_errors(refused, "token_endpoint_auth_method"),
                                values=_machine_shown(page.form), methods=_MACHINE_METHODS, section="servers")
        return self._render("machine_client_created.html", page, f"Machine client of {slug}", client=client,
                            secret=secret, back=f"{PREFIX}/servers/{quote(slug)}/clients", section="servers")

    def _grants(self, page: _Page) -> Response:
        q = page.query
        listed = self.management.grants(page.actor, server=q.get("server") or None, user_id=q.get("user_id") or None,
                                        client_id=q.get("client_id") or None, limit=100, after=q.get("cursor"))
        filters = {k: v for k, v in q.items() if k in ("server", "user_id", "client_id") and v}
        items = [{"tenant": g.tenant, "user_id": g.user_id, "client_id": g.client_id, "scope": g.scope,
                  "created": _when(g.created_at), "last_used": _when(g.last_used_at) or "not yet",
                  "revoke": f"{PREFIX}/grants/{quote(g.tenant)}/{quote(g.grant_id, safe='')}/revoke"}
                 for g in listed.items]
        next_page = None if listed.next is None else "?" + urlencode({**filters, "cursor": listed.next})
        return self._render("grants.html", page, "Grants", items=items, next=next_page, query=filters,
                            section="grants")

    def _audit(self, page: _Page) -> Response:
        q = page.query
        before = q.get("cursor")
        listed = self.management.audit_events(
            page.actor, server=q.get("server") or None, user_id=q.get("user_id") or None,
            event=q.get("event") or None, limit=100,
            before=int(before) if before and before.isascii() and before.isdigit() and len(before) < 18 else None)
        filters = {k: v for k, v in q.items() if k in ("server", "user_id", "event") and v}
        items = [{**attrs.asdict(e), "when": _when(e.at)} for e in listed.items]
        next_page = None if listed.next is None else "?" + urlencode({**filters, "cursor": listed.next})
        return self._render("audit.html", page, "Audit log", items=items, next=next_page, query=filters,
                            section="audit")


# -- forms to the operations' values, and back -------------------------------------------

_CONFIG_TEXT = ("issuer", "domain", "tenant", "user_pool_id", "authorization_endpoint", "token_endpoint",
                "userinfo_endpoint", "user_id_claim")
_SERVER_TEXT = ("backend", "resource_name")


def _config_values(form: Mapping[str, str], creating: bool) -> dict[str, Any]:
    """An empty optional field is no value (on creation) or none (on an edit);
    an empty secret keeps the one set."""
    values: dict[str, Any] = {k: form[k] for k in ("kind", "client_id") if k in form}
    for name in _CONFIG_TEXT:
        text = form.get(name, "").strip()
        if text or not creating:
            values[name] = text or None
    scopes = form.get("scopes", "").split()
    if scopes or not creating:
        values["scopes"] = scopes or None
    if form.get("client_secret"):
        values["client_secret"] = form["client_secret"]
    elif creating:
        values["client_secret"] = None
    values["pkce"] = form.get("pkce") == "on"
    return values


def _server_values(form: Mapping[str, str], creating: bool) -> dict[str, Any]:
    values: dict[str, Any] = {k: form[k].strip() for k in ("oauth_config", "issuer", "resource") if k in form}
    for name in _SERVER_TEXT:
        text = form.get(name, "").strip()
        if text or not creating:
            values[name] = text or None
    values["scopes"] = form.get("scopes", "").split()
    values["required_scopes"] = form.get("required_scopes", "").split()
    return values


_MACHINE_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")
# The form's checkbox for each grant a machine client may be registered for.
_MACHINE_GRANTS = {"grant_client_credentials": CLIENT_CREDENTIALS, "grant_jwt_bearer": JWT_BEARER}


def _machine_values(form: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "token_endpoint_auth_method": form.get("token_endpoint_auth_method", ""),
        "grant_types": [grant for box, grant in _MACHINE_GRANTS.items() if form.get(box) == "on"],
    }
    for name in ("client_name", "scope", "jwks_uri"):
        if form.get(name, "").strip():
            values[name] = form[name].strip()
    if form.get("jwks", "").strip():
        try:
            values["jwks"] = parse_json(form["jwks"])  # the API's rules: no NaN, no nesting without end
        except ValueError:
            raise Invalid([FieldError("jwks", "not JSON: paste the JWK Set, {\"keys\": [...]}")]) from None
    return values


def _machine_shown(form: Mapping[str, str]) -> dict[str, Any]:
    return {**{k: v for k, v in form.items() if k != "csrf"}, **{box: form.get(box) == "on" for box in _MACHINE_GRANTS}}


def _shown(form: Mapping[str, str]) -> dict[str, Any]:
    """What a refused form shows again: what was typed, never the secret."""
    shown: dict[str, Any] = {k: v for k, v in form.items() if k not in ("csrf", "client_secret", "confirmed")}
    shown["pkce"] = form.get("pkce") == "on"
    return shown


def _config_shown(c: Any) -> dict[str, Any]:
    shown = {k: getattr(c, k) or "" for k in ("kind", "client_id", *_CONFIG_TEXT)}
    shown.update(scopes=" ".join(c.scopes or ()), pkce=c.pkce)
    return shown


def _server_shown(s: Any) -> dict[str, Any]:
    shown = {k: getattr(s, k) or "" for k in ("slug", "organization", "oauth_config", "issuer", "resource",
                                               *_SERVER_TEXT)}
    shown.update(scopes=" ".join(s.scopes), required_scopes=" ".join(s.required_scopes))
    return shown


def _field_errors(refused: AdminError, fallback: str) -> dict[str, str]:
    """Each error next to its field; one about no field, next to ``fallback``."""
    if isinstance(refused, Invalid):
        errors: dict[str, str] = {}
        for e in refused.errors:
            errors.setdefault(e.field or fallback, e.detail)
        return errors
    return {fallback: str(refused)}
