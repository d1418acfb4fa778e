"""What an operator may do to the directory, the registered clients and the
grants, with the rules said once: the admin API (admin/api.py) and the CLI
(cli_directory.py, cli_admin.py) both call these, so they accept, refuse and
audit alike.

Every operation is done on behalf of an :class:`Actor`: an admin token,
global or of one organization, or the CLI. An organization's actor sees and
changes nothing of another organization: whatever is not its own is
:class:`NotFound`, exactly as what does not exist, so it learns nothing.
Servers declared in the configuration file belong to no organization: a
global actor sees them, read-only.

Every change is an audit event naming the actor and the object, never a
secret (the client secret of an OAuth configuration is write-only).
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from .. import config as config_mod
from .. import machine_clients
from ..core.errors import DirectoryRefused
from ..core.models import AuditEvent, Client, GrantInfo, OAuthConfig, Organization, Server
from ..core.store import AUDIT_RETENTION, Store
from ..directory import Entry
from ..tenants_db import oauth_config_problems, server_clash, server_problems
from .backends import backend_allowed

T = TypeVar("T")

# The most items one page holds, and how many when the caller does not say.
MAX_PAGE = 500
DEFAULT_PAGE = 100


@attrs.frozen
class Actor:
    """Who acts: ``name`` goes in audit events (an admin token's id, or
    ``cli``); ``organization`` None is global."""

    name: str
    organization: str | None = None


CLI = Actor("cli")


class AdminError(Exception):
    """A refused operation; ``status`` is its HTTP status, the message its
    detail (never a secret)."""

    status = 400


class NotFound(AdminError):
    status = 404


class Conflict(AdminError):
    status = 409


class Forbidden(AdminError):
    status = 403


@attrs.frozen
class FieldError:
    field: str
    detail: str


class Invalid(AdminError):
    """Values that break the rules; ``errors`` name the field each is about."""

    status = 422

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.detail}" for e in errors))
        self.errors = tuple(errors)


def invalid(field: str, detail: str) -> Invalid:
    return Invalid([FieldError(field, detail)])


@attrs.frozen
class Page:
    """One page of a list, and the cursor of the next (None: the last)."""

    items: list[Any]
    next: str | None


def page_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_PAGE
    if not 1 <= limit <= MAX_PAGE:
        raise invalid("limit", f"must be 1 to {MAX_PAGE}")
    return limit


# -- field checks: JSON values and command-line options alike ------------------------

# A field's kinds: str, int, bool, "strings" (a list of strings), "policy"
# (an object of lifetimes); None among them: may be null.
_Kinds = tuple[Any, ...]

CONFIG_FIELDS: dict[str, _Kinds] = {
    "kind": (str,), "client_id": (str,), "client_secret": (str,),
    "issuer": (str, None), "domain": (str, None), "authorization_endpoint": (str, None),
    "token_endpoint": (str, None), "userinfo_endpoint": (str, None), "scopes": ("strings", None),
    "user_id_claim": (str, None), "token_auth_method": (str, None), "pkce": (bool,),
    "tenant": (str, None), "user_pool_id": (str, None),
}
SERVER_FIELDS: dict[str, _Kinds] = {
    "oauth_config": (str,), "issuer": (str,), "resource": (str,), "scopes": ("strings",),
    "required_scopes": ("strings",), "policy": ("policy",), "backend": (str, None),
    "forward_upstream_token_header": (str, None), "resource_name": (str, None), "id_jag_issuers": ("strings",),
}
ORGANIZATION_FIELDS: dict[str, _Kinds] = {"display_name": (str,)}
MACHINE_CLIENT_FIELDS: dict[str, _Kinds] = {
    "client_name": (str, None), "grant_types": ("strings",), "token_endpoint_auth_method": (str,),
    "scope": (str, None), "jwks": ("object", None), "jwks_uri": (str, None),
}

_NAMES = {str: "a string", bool: "true or false", "strings": "a list of strings",
          "policy": "an object of whole seconds", "object": "an object", None: "null"}


def _fits(value: Any, kind: Any) -> bool:
    if kind is None:
        return value is None
    if kind is str:
        return isinstance(value, str)
    if kind is bool:
        return isinstance(value, bool)
    if kind == "strings":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "object":  # a JWK Set: machine_clients.jwks_problem says what it must hold
        return isinstance(value, dict)
    return isinstance(value, dict) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value.values())


# The longest text each field may hold (the database's columns; text
# columns are bounded here all the same), characters.
_LONGEST = {"issuer": 512, "resource": 512, "user_id_claim": 255, "token_auth_method": 32,
            "forward_upstream_token_header": 255, "tenant": 64, "user_pool_id": 64,
            # Of each entry: a scope, an issuer's URL, a grant type.
            "scopes": 255, "required_scopes": 255, "id_jag_issuers": 512, "grant_types": 64}
_TEXT_LIMIT = 2000
# Credentials a provider never issues empty; and the longest list a field holds.
_NOT_EMPTY = frozenset({"client_id", "client_secret"})
MAX_LIST = 100


def text_problem(value: str, longest: int = _TEXT_LIMIT) -> str | None:
    """Why a text is refused: too long, or holding a control or format
    character (a line break, an escape sequence, a bidi override), which
    would forge lines or colours where an operator reads it."""
    if len(value) > longest:
        return f"at most {longest} characters"
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in value):
        return "must not contain control or formatting characters"
    return None


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    if isinstance(value, dict):
        return [k for k in value if isinstance(k, str)]
    return []


def checked_fields(values: Mapping[str, Any], allowed: Mapping[str, _Kinds],
                   required: Iterable[str] = ()) -> dict[str, Any]:
    """The values, each of a kind its field allows; lists become tuples."""
    errors = [FieldError(k, "unknown field") for k in values if k not in allowed]
    missing = [k for k in required if values.get(k) is None]
    errors += [FieldError(k, "required") for k in missing]
    for name, value in values.items():
        kinds = allowed.get(name)
        if kinds is None or name in missing:
            continue
        if not any(_fits(value, k) for k in kinds):
            errors.append(FieldError(name, "must be " + " or ".join(_NAMES[k] for k in kinds)))
            continue
        problem = next((p for p in (text_problem(t, _LONGEST.get(name, _TEXT_LIMIT)) for t in _texts(value)) if p),
                       None)
        if problem is None and isinstance(value, str) and not value.strip() and name in _NOT_EMPTY:
            problem = "must not be empty or blank"
        if problem is None and isinstance(value, list) and len(value) > MAX_LIST:
            problem = f"at most {MAX_LIST} entries"
        if problem is not None:
            errors.append(FieldError(name, problem))
        elif "policy" in kinds and isinstance(value, dict) and any(not 0 <= v < 2**62 for v in value.values()):
            errors.append(FieldError(name, "each must be a whole number of seconds, 0 or more"))
    if errors:
        raise Invalid(errors)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


_PROBLEM = re.compile(r"^[a-z _]+\.(?P<field>[a-z_]+(?:\.[a-z_]+)*)(?:\[\d+\])?: (?P<detail>.*)$", re.S)


def _problems(problems: Sequence[str]) -> None:
    """The configuration file's rules' complaints, each about its field."""
    if problems:
        errors = []
        for p in problems:
            m = _PROBLEM.match(p)
            errors.append(FieldError(m["field"], m["detail"]) if m else FieldError("", p))
        raise Invalid(errors)


def check_name(name: str, field: str = "name") -> None:
    if not config_mod._SLUG.fullmatch(name):
        raise invalid(field, f"{name!r} must be 1-63 characters of a-z 0-9 _ - (starting with a letter or digit)")


# -- what an operator sees of each record ---------------------------------------------


def organization_doc(o: Organization) -> dict[str, Any]:
    return attrs.asdict(o)


def config_doc(c: OAuthConfig) -> dict[str, Any]:
    doc = attrs.asdict(c)
    doc["client_secret"] = "set" if c.client_secret else "not set"  # write-only
    doc["scopes"] = None if c.scopes is None else list(c.scopes)
    return doc


def server_doc(s: Server) -> dict[str, Any]:
    doc = attrs.asdict(s)
    doc.update(scopes=list(s.scopes), required_scopes=list(s.required_scopes), managed="database",
               read_only=False)
    return doc


def file_server_doc(e: Entry) -> dict[str, Any]:
    """A file tenant as the list shows a server: of no organization and no
    OAuth configuration (its upstream is the file's)."""
    t = e.tenant
    return {"slug": t.slug, "organization": None, "oauth_config": None, "issuer": t.issuer, "resource": t.resource,
            "scopes": list(t.scopes), "required_scopes": list(t.required_scopes),
            "resource_name": t.resource_name, "id_jag_issuers": list(t.id_jag_issuers), "managed": "file",
            "read_only": True}


def client_doc(c: Client, last_used_at: int | None = None) -> dict[str, Any]:
    return {"client_id": c.client_id, "server": c.tenant, "client_name": c.client_name,
            "client_uri": c.client_uri, "redirect_uris": list(c.redirect_uris),
            "token_endpoint_auth_method": c.token_endpoint_auth_method, "grant_types": list(c.grant_types),
            "application_type": c.application_type, "scope": c.scope, "created_at": c.created_at,
            "used": c.expires_at is None, "machine": c.is_machine,
            # Public keys only (registration refuses private members); never a secret.
            "jwks": None if c.jwks is None else json.loads(c.jwks), "jwks_uri": c.jwks_uri,
            "last_used_at": last_used_at}


def grant_doc(g: GrantInfo) -> dict[str, Any]:
    return {"server": g.tenant, "grant_id": g.grant_id, "client_id": g.client_id, "user_id": g.user_id,
            "scope": list(g.scope), "resource": g.resource, "created_at": g.created_at,
            "expires_at": g.expires_at, "last_used_at": g.last_used_at}


def audit_doc(e: AuditEvent) -> dict[str, Any]:
    return {"event_id": e.event_id, "at": e.at, "event": e.event, "server": e.tenant,
            "organization": e.organization, "client_id": e.client_id, "user_id": e.user_id,
            "actor": e.actor, "detail": dict(e.detail)}


# -- the operations ---------------------------------------------------------------------


def _paged(items: Sequence[T], key: Callable[[T], str], limit: int | None, after: str | None) -> Page:
    """A page of a list kept whole in memory (the directory's: small)."""
    limit = page_limit(limit)
    rest = [i for i in items if after is None or key(i) > after]
    chunk = rest[:limit]
    return Page(chunk, key(chunk[-1]) if len(rest) > limit else None)


_FILE_MANAGED = "server {slug!r} is file-managed (read-only here): change it in the configuration file"


@attrs.define
class Management:
    """The operations, on one store, beside the configuration file's tenants."""

    store: Store
    file_tenants: Sequence[Entry] = ()
    audit_retention: int = AUDIT_RETENTION
    clock: Callable[[], float] = time.time
    # Where each organization's servers may forward (server.organization_backends; admin/backends.py).
    organization_backends: Mapping[str, Sequence[str]] = attrs.field(factory=dict)
    # Servers one organization may have (server.max_servers_per_organization;
    # 0: no cap): every replica reloads them all after any change.
    max_servers_per_organization: int = 0

    def _now(self) -> int:
        return int(self.clock())

    def audit(self, actor: Actor, event: str, *, organization: str | None = None, tenant: str | None = None,
              client_id: str | None = None, user_id: str | None = None, **detail: Any) -> None:
        now = self._now()
        self.store.record_audit(
            AuditEvent(at=now, event=f"admin.{event}", tenant=tenant, organization=organization,
                       client_id=client_id, user_id=user_id, actor=actor.name,
                       detail={k: str(v) for k, v in detail.items()}),
            now + self.audit_retention)

    def _file_entry(self, slug: str) -> Entry | None:
        return next((e for e in self.file_tenants if e.tenant.slug == slug), None)

    @staticmethod
    def _sees(actor: Actor, organization: str | None) -> bool:
        return actor.organization is None or actor.organization == organization

    @staticmethod
    def _global(actor: Actor, what: str) -> None:
        if actor.organization is not None:
            raise Forbidden(f"{what} needs a global admin token")

    # -- organizations --

    @staticmethod
    def _named(name: str) -> bool:
        """Whether a record could have this name (else it is not there: no
        need to ask the database, which may refuse odd text outright)."""
        return bool(config_mod._SLUG.fullmatch(name))

    def organization(self, actor: Actor, name: str) -> Organization:
        seen = self._sees(actor, name) and self._named(name)
        o: Organization | None = self.store.get_organization(name) if seen else None
        if o is None:
            raise NotFound(f"no organization {name!r}")
        return o

    def organizations(self, actor: Actor, limit: int | None = None, after: str | None = None) -> Page:
        orgs = [o for o in self.store.list_organizations() if self._sees(actor, o.name)]
        return _paged(orgs, lambda o: o.name, limit, after)

    def create_organization(self, actor: Actor, name: str, values: Mapping[str, Any]) -> Organization:
        self._global(actor, "creating an organization")
        check_name(name)
        fields = checked_fields(values, ORGANIZATION_FIELDS)
        o = Organization(name, fields.get("display_name") or name, self._now())
        self._refusing(self.store.create_organization, o)
        self.audit(actor, "organization_created", organization=name)
        return o

    def update_organization(self, actor: Actor, name: str, values: Mapping[str, Any]) -> Organization:
        fields = checked_fields(values, ORGANIZATION_FIELDS)
        o = attrs.evolve(self.organization(actor, name), **fields)
        self._refusing(self.store.update_organization, o)
        self.audit(actor, "organization_updated", organization=name, fields=",".join(sorted(fields)))
        return o

    def delete_organization(self, actor: Actor, name: str) -> None:
        self._global(actor, "deleting an organization")
        self.organization(actor, name)
        self._refusing(self.store.delete_organization, name)
        self.audit(actor, "organization_deleted", organization=name)

    # -- OAuth configurations --

    def oauth_config(self, actor: Actor, organization: str, name: str) -> OAuthConfig:
        seen = self._sees(actor, organization) and self._named(organization) and self._named(name)
        c: OAuthConfig | None = self.store.get_oauth_config(organization, name) if seen else None
        if c is None:
            raise NotFound(f"no OAuth configuration {organization}/{name}")
        return c

    def oauth_configs(self, actor: Actor, organization: str | None = None, limit: int | None = None,
                      after: str | None = None) -> Page:
        if organization is not None and not self._sees(actor, organization):
            raise NotFound(f"no organization {organization!r}")
        configs = self.store.list_oauth_configs(organization or actor.organization)
        return _paged(configs, lambda c: f"{c.organization}/{c.name}", limit, after)

    def create_oauth_config(self, actor: Actor, organization: str, name: str,
                            values: Mapping[str, Any]) -> OAuthConfig:
        self.organization(actor, organization)
        check_name(name)
        fields = checked_fields(values, CONFIG_FIELDS, required=("kind", "client_id", "client_secret"))
        c = OAuthConfig(organization=organization, name=name, updated_at=self._now(), **fields)
        _problems(oauth_config_problems(c))
        self._refusing(self.store.create_oauth_config, c)
        self.audit(actor, "oauth_config_created", organization=organization, oauth_config=name)
        return c

    def update_oauth_config(self, actor: Actor, organization: str, name: str,
                            values: Mapping[str, Any]) -> OAuthConfig:
        """Edited in place (a rotated secret, say): its grants are kept."""
        fields = checked_fields(values, CONFIG_FIELDS)
        c = attrs.evolve(self.oauth_config(actor, organization, name), updated_at=self._now(), **fields)
        _problems(oauth_config_problems(c))
        self._refusing(self.store.update_oauth_config, c)
        self.audit(actor, "oauth_config_updated", organization=organization, oauth_config=name,
                   fields=",".join(sorted(fields)))
        return c

    def delete_oauth_config(self, actor: Actor, organization: str, name: str) -> None:
        self.oauth_config(actor, organization, name)
        self._refusing(self.store.delete_oauth_config, organization, name)
        self.audit(actor, "oauth_config_deleted", organization=organization, oauth_config=name)

    # -- servers --

    def server(self, actor: Actor, slug: str) -> Server | Entry:
        """A database server, or (for a global actor) a file-managed tenant."""
        entry = self._file_entry(slug)
        if entry is not None and actor.organization is None:
            return entry
        s: Server | None = self.store.get_server(slug) if self._named(slug) else None
        if s is None or not self._sees(actor, s.organization):
            raise NotFound(f"no server {slug!r}")
        return s

    def _database_server(self, actor: Actor, slug: str) -> Server:
        s = self.server(actor, slug)
        if isinstance(s, Entry):
            raise Conflict(_FILE_MANAGED.format(slug=slug))
        return s

    def servers(self, actor: Actor, organization: str | None = None, limit: int | None = None,
                after: str | None = None) -> Page:
        """File-managed servers (a global actor's, unless an organization is
        named) then the database's, by slug."""
        if organization is not None and not self._sees(actor, organization):
            raise NotFound(f"no organization {organization!r}")
        organization = organization or actor.organization
        docs = [] if organization is not None else [file_server_doc(e) for e in self.file_tenants]
        docs += [server_doc(s) for s in self.store.list_servers(organization)]
        docs.sort(key=lambda d: str(d["slug"]))
        return _paged(docs, lambda d: str(d["slug"]), limit, after)

    def _check_backend(self, actor: Actor, fields: Mapping[str, Any]) -> None:
        """An organization names a backend only beneath one the operator
        listed for it (admin/backends.py); taking one away is always its
        own to do. Its refusal names that organization's list alone."""
        backend = fields.get("backend")
        if actor.organization is None or backend is None:
            return
        allowed = self.organization_backends.get(actor.organization, ())
        if backend_allowed(backend, allowed):
            return
        if not allowed:
            raise Forbidden("this organization's admin token names no backend (server.organization_backends "
                            "lists none for it); a global admin token or the CLI names it")
        raise Forbidden("this organization's admin token names a backend only beneath one of: " + ", ".join(allowed))

    def _check_server(self, actor: Actor, s: Server) -> None:
        """The file's rules, and a place of its own: no other tenant's
        requests may reach it (tenants_db.place_problems, file_clash, server_clash)."""
        problems = server_problems(s, self.file_tenants)
        clash = [p for p in problems if not _PROBLEM.match(p)]
        if clash:
            raise Conflict("; ".join(clash))
        _problems(problems)
        other = server_clash(s, self.store.list_servers(None))
        if other is not None:
            # Another organization's server is not named to this actor.
            owner = f"server {other.slug!r}" if self._sees(actor, other.organization) else "another server"
            raise Conflict(f"it would answer where {owner} does (the same place, or beneath or above it)")
        if self.store.get_oauth_config(s.organization, s.oauth_config) is None:
            raise invalid("oauth_config", f"no OAuth configuration {s.organization}/{s.oauth_config}")

    def create_server(self, actor: Actor, slug: str, organization: str, values: Mapping[str, Any]) -> Server:
        check_name(slug, "slug")
        self.organization(actor, organization)
        fields = checked_fields(values, SERVER_FIELDS, required=("oauth_config", "issuer", "resource"))
        self._check_backend(actor, fields)
        if self._file_entry(slug) is not None:
            raise Conflict(_FILE_MANAGED.format(slug=slug))
        if self.store.get_server(slug) is not None:
            raise Conflict(f"server {slug!r} exists already")
        cap = self.max_servers_per_organization
        if cap and len(self.store.list_servers(organization)) >= cap:
            raise Conflict(f"organization {organization!r} has {cap} servers, the most it may have "
                           "(server.max_servers_per_organization)")
        s = Server(slug=slug, organization=organization, updated_at=self._now(), **fields)
        self._check_server(actor, s)
        self._refusing(self.store.create_server, s)
        self.audit(actor, "server_created", organization=organization, tenant=slug, oauth_config=s.oauth_config)
        return s

    def update_server(self, actor: Actor, slug: str, values: Mapping[str, Any]) -> tuple[Server, int]:
        """The server as changed, and how many grants the change revoked
        (another OAuth configuration revokes those made through the old one)."""
        old = self._database_server(actor, slug)
        fields = checked_fields(values, SERVER_FIELDS)
        self._check_backend(actor, fields)
        if "policy" in fields:
            fields["policy"] = {**old.policy, **fields["policy"]}
        if fields.get("backend", old.backend) is None:
            fields["forward_upstream_token_header"] = None
        s = attrs.evolve(old, updated_at=self._now(), **fields)
        self._check_server(actor, s)
        revoked = self._refusing(self.store.update_server, s)
        detail = {"fields": ",".join(sorted(values))}
        if s.oauth_config != old.oauth_config:
            detail.update(oauth_config=s.oauth_config, previous_oauth_config=old.oauth_config,
                          revoked_grants=str(revoked))
        self.audit(actor, "server_updated", organization=s.organization, tenant=slug, **detail)
        return s, revoked

    def delete_server(self, actor: Actor, slug: str) -> int:
        """Removes the server and revokes its grants: their count."""
        s = self._database_server(actor, slug)
        revoked: int = self._refusing(self.store.delete_server, slug)
        self.audit(actor, "server_deleted", organization=s.organization, tenant=slug, revoked_grants=revoked)
        return revoked

    def _organization_of(self, actor: Actor, slug: str) -> str | None:
        """The server's organization (None: file-managed), if the actor sees it."""
        s = self.server(actor, slug)
        return None if isinstance(s, Entry) else s.organization

    # -- registered clients --

    def clients(self, actor: Actor, slug: str, limit: int | None = None, after: str | None = None) -> Page:
        self._organization_of(actor, slug)
        limit = page_limit(limit)
        found = self.store.list_clients(tenant=slug, limit=limit + 1, after=after)
        return Page(found[:limit], found[limit - 1].client_id if len(found) > limit else None)

    def clients_last_used(self, slug: str, clients: Iterable[Client]) -> dict[str, int]:
        """When each of these clients (of a server the actor sees) last got a token."""
        return dict(self.store.clients_last_used(tenant=slug, client_ids=tuple(c.client_id for c in clients)))

    def client(self, actor: Actor, slug: str, client_id: str) -> Client:
        self._organization_of(actor, slug)
        c: Client | None = self.store.get_client(slug, client_id)
        if c is None:
            raise NotFound(f"no client {client_id!r} on server {slug!r}")
        return c

    def create_machine_client(self, actor: Actor, slug: str, values: Mapping[str, Any]) -> tuple[Client, str | None]:
        """Registers a client without a browser to the server: the client,
        and its secret (a secret method's), which is shown once and kept
        only as its hash."""
        organization = self._organization_of(actor, slug)
        fields = checked_fields(values, MACHINE_CLIENT_FIELDS)
        method = fields.get("token_endpoint_auth_method", "client_secret_basic")
        grant_types = fields.get("grant_types", ("client_credentials",))
        offered = self._scopes_of(actor, slug)
        found = machine_clients.problems(method, grant_types, has_secret=True, jwks=fields.get("jwks"),
                                         jwks_uri=fields.get("jwks_uri"), scope=fields.get("scope"), offered=offered)
        if found:
            raise Invalid([FieldError(k, v) for k, v in found.items()])
        client_id, secret = machine_clients.new_credentials(method)
        c = machine_clients.machine_client(
            slug, client_id, method, grant_types, created_at=self._now(),
            secret_hash=machine_clients.secret_hash(secret), jwks=fields.get("jwks"),
            jwks_uri=fields.get("jwks_uri"), scope=fields.get("scope"), client_name=fields.get("client_name"))
        self.store.save_client(c)
        self.audit(actor, "client_created", organization=organization, tenant=slug, client_id=client_id,
                   grant_types=",".join(c.grant_types), token_endpoint_auth_method=method)
        return c, secret

    def _scopes_of(self, actor: Actor, slug: str) -> tuple[str, ...]:
        s = self.server(actor, slug)
        return s.tenant.scopes if isinstance(s, Entry) else s.scopes

    def delete_client(self, actor: Actor, slug: str, client_id: str) -> int:
        """Removes a registered client and revokes its grants: their count."""
        organization = self._organization_of(actor, slug)
        revoked = self.store.delete_client(slug, client_id)
        if revoked is None:
            raise NotFound(f"no client {client_id!r} on server {slug!r}")
        self.audit(actor, "client_deleted", organization=organization, tenant=slug, client_id=client_id,
                   revoked_grants=revoked)
        return int(revoked)

    # -- grants --

    def grants(self, actor: Actor, *, server: str | None = None, user_id: str | None = None,
               client_id: str | None = None, limit: int | None = None, after: str | None = None) -> Page:
        """Live grants, by server and grant id."""
        if server is not None:
            self._organization_of(actor, server)
        limit = page_limit(limit)
        cursor = None
        if after is not None:
            tenant, sep, grant_id = after.partition("/")
            if not sep:
                raise invalid("cursor", "not a cursor this list gave")
            cursor = (tenant, grant_id)
        found = self.store.list_grants(now=self._now(), limit=limit + 1, after=cursor,
                                       organization=actor.organization, tenant=server, user_id=user_id,
                                       client_id=client_id)
        last = found[limit - 1] if len(found) > limit else None
        return Page(found[:limit], None if last is None else f"{last.tenant}/{last.grant_id}")

    def revoke_grant(self, actor: Actor, server: str, grant_id: str) -> GrantInfo:
        organization = self._organization_of(actor, server)
        g: GrantInfo | None = self.store.get_grant_info(tenant=server, grant_id=grant_id, now=self._now())
        if g is None:
            raise NotFound(f"no live grant {grant_id!r} on server {server!r}")
        self.store.revoke_grant(tenant=server, grant_id=grant_id)
        self.audit(actor, "grant_revoked", organization=organization, tenant=server, client_id=g.client_id,
                   user_id=g.user_id, grant_id=grant_id)
        return g

    # -- the audit log --

    def audit_events(self, actor: Actor, *, server: str | None = None, user_id: str | None = None,
                     client_id: str | None = None, event: str | None = None, since: int | None = None,
                     until: int | None = None, limit: int | None = None, before: int | None = None) -> Page:
        """Newest first."""
        if server is not None:
            self._organization_of(actor, server)
        limit = page_limit(limit)
        found = self.store.list_audit_events(limit=limit + 1, before=before, organization=actor.organization,
                                             tenant=server, user_id=user_id, client_id=client_id, event=event,
                                             since=since, until=until)
        return Page(found[:limit], str(found[limit - 1].event_id) if len(found) > limit else None)

    # --

    @staticmethod
    def _refusing(operation: Callable[..., T], *args: Any) -> T:
        """The store's own refusal (a race another change won) as a conflict."""
        try:
            return operation(*args)
        except DirectoryRefused as refused:
            text = str(refused)
            raise (NotFound if text.startswith("no ") else Conflict)(text) from refused
