"""``mcp-oauth-proxy organizations | oauth-configs | servers``: the directory
kept in the database named by ``--config FILE`` (its ``[server]`` table).
Every replica serving that database serves a change within about two
seconds, without a restart (housekeeping.follow_directory).

A client secret is never taken on the command line (argv is visible to
every user of the machine, and kept in shell histories): it is read from
the environment variable ``--client-secret-env NAME`` names, or from the
first line of stdin (``--client-secret-stdin``). It is never printed
either: ``show`` says ``set``. ``--json`` prints JSON instead of text. Any
failure is one line on stderr, ``error: …``, and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable, Sequence

import attrs
from sqlalchemy.exc import DBAPIError

from . import config as config_mod
from .app import _keyring, config_tenants
from .core.errors import DirectoryRefused, StorageUnavailable
from .core.models import OAuthConfig, Organization, Server
from .core.store import Store
from .directory import Entry
from .storage.keys import KeyConfigError
from .storage.migrations import SchemaError
from .storage.open import open_store
from .tenants_db import POLICY_FIELDS, oauth_config_problems, server_problems

_SECRET_HELP = ("the client secret is read from this environment variable, or with --client-secret-stdin "
                "from the first line of stdin; never from the command line, where other users and shell "
                "histories see it")


class CliError(Exception):
    """A request the command refuses before asking the database."""


class _Context:
    def __init__(self, args: argparse.Namespace) -> None:
        self.config = config_mod.load(args.config)
        if self.config.server.database.startswith("memory:"):
            raise CliError(f"{args.config}: database is memory://, which keeps nothing: use a SQL database")
        self.store: Store = open_store(self.config.server.database, _keyring(self.config.server),
                                       timeout=self.config.server.database_timeout)
        self.file: tuple[Entry, ...] = tuple(config_tenants(self.config, os.environ).tenants)  # type: ignore[arg-type]
        self.json = args.json

    def file_tenant(self, slug: str) -> Entry | None:
        return next((e for e in self.file if e.tenant.slug == slug), None)

    def close(self) -> None:
        engine = getattr(self.store, "engine", None)
        if engine is not None:
            engine.dispose()

    def say(self, text: str, doc: Any) -> None:
        print(json.dumps(doc, indent=2, sort_keys=True) if self.json else text)


def _now() -> int:
    return int(time.time())


# -- organizations ---------------------------------------------------------------


def _org_doc(o: Organization) -> dict[str, Any]:
    return attrs.asdict(o)


def org_create(ctx: _Context, args: argparse.Namespace) -> None:
    _check_name(args.name, "organization")
    o = Organization(args.name, args.display_name or args.name, _now())
    ctx.store.create_organization(o)
    ctx.say(f"created organization {o.name}", _org_doc(o))


def org_list(ctx: _Context, args: argparse.Namespace) -> None:
    orgs = ctx.store.list_organizations()
    ctx.say("\n".join(f"{o.name}\t{o.display_name}" for o in orgs) or "no organizations",
            [_org_doc(o) for o in orgs])


def _get_org(ctx: _Context, name: str) -> Organization:
    o = ctx.store.get_organization(name)
    if o is None:
        raise DirectoryRefused(f"no organization {name!r}")
    return o


def org_show(ctx: _Context, args: argparse.Namespace) -> None:
    doc = _org_doc(_get_org(ctx, args.name))
    ctx.say(_lines(doc), doc)


def org_update(ctx: _Context, args: argparse.Namespace) -> None:
    if args.display_name is None:
        raise CliError("nothing to change: give --display-name")
    o = attrs.evolve(_get_org(ctx, args.name), display_name=args.display_name)
    ctx.store.update_organization(o)
    ctx.say(f"updated organization {o.name}", _org_doc(o))


def org_delete(ctx: _Context, args: argparse.Namespace) -> None:
    ctx.store.delete_organization(args.name)  # refused while it owns configurations or servers
    ctx.say(f"deleted organization {args.name}", {"deleted": args.name})


# -- OAuth configurations ---------------------------------------------------------------

_UPSTREAM_OPTIONS = ("issuer", "domain", "authorization_endpoint", "token_endpoint", "userinfo_endpoint",
                     "user_id_claim", "token_auth_method")


def _config_doc(c: OAuthConfig) -> dict[str, Any]:
    doc = attrs.asdict(c)
    doc["client_secret"] = "set" if c.client_secret else "not set"  # write-only
    doc["scopes"] = None if c.scopes is None else list(c.scopes)
    return doc


def _secret(args: argparse.Namespace) -> str | None:
    if args.client_secret_env and args.client_secret_stdin:
        raise CliError("give --client-secret-env or --client-secret-stdin, not both")
    if args.client_secret_env:
        value = os.environ.get(args.client_secret_env)
        if not value:
            raise CliError(f"environment variable {args.client_secret_env} is not set")
        return value
    if args.client_secret_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
        if not value:
            raise CliError("no client secret on stdin")
        return value
    return None


def _check_name(name: str, what: str) -> None:
    if not config_mod._SLUG.fullmatch(name):
        raise CliError(f"{what} name {name!r}: must be 1-63 characters of a-z 0-9 _ - "
                       "(starting with a letter or digit)")


def _checked_config(c: OAuthConfig) -> OAuthConfig:
    problems = oauth_config_problems(c)
    if problems:
        raise CliError("; ".join(problems))
    return c


def _config_changes(args: argparse.Namespace) -> dict[str, Any]:
    changes: dict[str, Any] = {k: getattr(args, k) for k in ("kind", "client_id", *_UPSTREAM_OPTIONS)
                               if getattr(args, k) is not None}
    if args.scope is not None:
        changes["scopes"] = tuple(args.scope)
    if args.pkce is not None:
        changes["pkce"] = args.pkce
    return changes


def config_create(ctx: _Context, args: argparse.Namespace) -> None:
    _check_name(args.name, "OAuth configuration")
    secret = _secret(args)
    if secret is None:
        raise CliError("give the client secret with --client-secret-env NAME or --client-secret-stdin")
    if args.kind is None or args.client_id is None:
        raise CliError("give --kind and --client-id")
    c = _checked_config(OAuthConfig(organization=args.organization, name=args.name, client_secret=secret,
                                    updated_at=_now(), **_config_changes(args)))
    ctx.store.create_oauth_config(c)
    ctx.say(f"created OAuth configuration {c.organization}/{c.name}", _config_doc(c))


def _get_config(ctx: _Context, args: argparse.Namespace) -> OAuthConfig:
    c = ctx.store.get_oauth_config(args.organization, args.name)
    if c is None:
        raise DirectoryRefused(f"no OAuth configuration {args.organization}/{args.name}")
    return c


def config_list(ctx: _Context, args: argparse.Namespace) -> None:
    configs = ctx.store.list_oauth_configs(args.organization)
    ctx.say("\n".join(f"{c.organization}/{c.name}\t{c.kind}\t{c.issuer or c.domain or c.authorization_endpoint or ''}"
                      for c in configs) or "no OAuth configurations", [_config_doc(c) for c in configs])


def _lines(doc: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {'' if v is None else v}" for k, v in doc.items())


def config_show(ctx: _Context, args: argparse.Namespace) -> None:
    doc = _config_doc(_get_config(ctx, args))
    ctx.say(_lines(doc), doc)


def config_update(ctx: _Context, args: argparse.Namespace) -> None:
    old = _get_config(ctx, args)
    changes = _config_changes(args)
    secret = _secret(args)
    if secret is not None:
        changes["client_secret"] = secret
    if not changes:
        raise CliError("nothing to change: give the options to change")
    c = _checked_config(attrs.evolve(old, updated_at=_now(), **changes))
    ctx.store.update_oauth_config(c)
    ctx.say(f"updated OAuth configuration {c.organization}/{c.name} (the grants made through it are kept)",
            _config_doc(c))


def config_delete(ctx: _Context, args: argparse.Namespace) -> None:
    ctx.store.delete_oauth_config(args.organization, args.name)
    ctx.say(f"deleted OAuth configuration {args.organization}/{args.name}",
            {"deleted": f"{args.organization}/{args.name}"})


# -- servers ---------------------------------------------------------------------------


def _server_doc(s: Server) -> dict[str, Any]:
    doc = attrs.asdict(s)
    doc.update(scopes=list(s.scopes), required_scopes=list(s.required_scopes), managed="database")
    return doc


def _file_doc(e: Entry) -> dict[str, Any]:
    t = e.tenant
    return {"slug": t.slug, "issuer": t.issuer, "resource": t.resource, "scopes": list(t.scopes),
            "required_scopes": list(t.required_scopes), "resource_name": t.resource_name,
            "managed": "file", "read_only": True}


def _policy(items: Sequence[str]) -> dict[str, int]:
    policy = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in POLICY_FIELDS or not value.strip().lstrip("-").isdigit():
            raise CliError(f"--policy {item!r}: must be KEY=SECONDS, KEY one of {', '.join(POLICY_FIELDS)}")
        policy[key] = int(value)
    return policy


def _server_changes(args: argparse.Namespace) -> dict[str, Any]:
    changes: dict[str, Any] = {k: getattr(args, k) for k in (
        "oauth_config", "issuer", "resource", "backend", "forward_upstream_token_header", "resource_name")
        if getattr(args, k) is not None}
    if args.scope is not None:
        changes["scopes"] = tuple(args.scope)
    if args.required_scope is not None:
        changes["required_scopes"] = tuple(args.required_scope)
    return changes


def _checked_server(ctx: _Context, s: Server) -> Server:
    problems = server_problems(s, ctx.file)
    if problems:
        raise CliError("; ".join(problems))
    return s


def _not_file_managed(ctx: _Context, slug: str) -> None:
    if ctx.file_tenant(slug) is not None:
        raise CliError(f"server {slug!r} is file-managed (read-only here): change it in the configuration file")


def server_create(ctx: _Context, args: argparse.Namespace) -> None:
    if args.organization is None or args.oauth_config is None or args.issuer is None or args.resource is None:
        raise CliError("give --organization, --oauth-config, --issuer and --resource")
    _not_file_managed(ctx, args.slug)
    s = _checked_server(ctx, Server(slug=args.slug, organization=args.organization, updated_at=_now(),
                                    policy=_policy(args.policy or ()), **_server_changes(args)))
    ctx.store.create_server(s)
    ctx.say(f"created server {s.slug} (every replica serves it within about two seconds)", _server_doc(s))


def _get_server(ctx: _Context, slug: str) -> Server:
    s = ctx.store.get_server(slug)
    if s is None:
        raise DirectoryRefused(f"no server {slug!r}")
    return s


def server_list(ctx: _Context, args: argparse.Namespace) -> None:
    docs = [] if args.organization else [_file_doc(e) for e in ctx.file]
    docs += [_server_doc(s) for s in ctx.store.list_servers(args.organization)]
    ctx.say("\n".join(f"{d['slug']}\t{d['managed']}\t{d['issuer']}\t{d['resource']}" for d in docs)
            or "no servers", docs)


def server_show(ctx: _Context, args: argparse.Namespace) -> None:
    entry = ctx.file_tenant(args.slug)
    doc = _file_doc(entry) if entry is not None else _server_doc(_get_server(ctx, args.slug))
    ctx.say(_lines(doc), doc)


def server_update(ctx: _Context, args: argparse.Namespace) -> None:
    _not_file_managed(ctx, args.slug)
    if args.organization is not None:
        raise CliError("a server's organization cannot change")
    old = _get_server(ctx, args.slug)
    changes = _server_changes(args)
    if args.policy is not None:
        changes["policy"] = {**old.policy, **_policy(args.policy)}
    if args.no_backend:
        changes.update(backend=None, forward_upstream_token_header=None)
    if not changes:
        raise CliError("nothing to change: give the options to change")
    s = _checked_server(ctx, attrs.evolve(old, updated_at=_now(), **changes))
    revoked = ctx.store.update_server(s)
    text = f"updated server {s.slug}"
    if s.oauth_config != old.oauth_config:
        text += (f"; it signs in with {s.organization}/{s.oauth_config} now: revoked {revoked} grant(s) "
                 f"made through {old.organization}/{old.oauth_config}")
    ctx.say(text, {**_server_doc(s), "revoked_grants": revoked})


def server_delete(ctx: _Context, args: argparse.Namespace) -> None:
    _not_file_managed(ctx, args.slug)
    revoked = ctx.store.delete_server(args.slug)
    ctx.say(f"deleted server {args.slug}; revoked {revoked} grant(s)", {"deleted": args.slug, "revoked_grants": revoked})


# -- the parsers ------------------------------------------------------------------------


def _run(func: Callable[[_Context, argparse.Namespace], None]) -> Callable[[argparse.Namespace], int]:
    """The command on the configured database; failures one line on stderr, status 1."""
    def run(args: argparse.Namespace) -> int:
        ctx = None
        try:
            ctx = _Context(args)
            func(ctx, args)
            return 0
        except (DirectoryRefused, CliError, KeyConfigError, SchemaError, StorageUnavailable) as error:
            print(f"error: {error}", file=sys.stderr)
        except DBAPIError as error:
            print(f"error: the database failed: {type(error.orig).__name__}", file=sys.stderr)
        except config_mod.ConfigError as error:
            print(f"error: {args.config}: " + "; ".join(error.problems), file=sys.stderr)
        except OSError as error:
            print(f"error: {error.strerror or error}", file=sys.stderr)
        finally:
            if ctx is not None:
                ctx.close()
        return 1

    return run


def _command(group: Any, name: str, func: Callable[[_Context, argparse.Namespace], None], help: str) -> Any:
    parser = group.add_parser(name, help=help, description=help)
    parser.add_argument("--config", required=True, help="the TOML config file naming the database and key file")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=_run(func))
    return parser


def _upstream_options(parser: Any) -> None:
    parser.add_argument("--kind", choices=config_mod.KINDS)
    parser.add_argument("--client-id")
    secret = parser.add_argument_group("client secret (never on the command line)")
    secret.add_argument("--client-secret-env", metavar="NAME", help=_SECRET_HELP)
    secret.add_argument("--client-secret-stdin", action="store_true",
                        help="read the client secret from the first line of stdin")
    for option in _UPSTREAM_OPTIONS:
        parser.add_argument("--" + option.replace("_", "-"))
    parser.add_argument("--scope", action="append", help="an upstream scope to ask for (repeat)")
    parser.add_argument("--pkce", action=argparse.BooleanOptionalAction, default=None)


def _server_options(parser: Any) -> None:
    parser.add_argument("--organization")
    parser.add_argument("--oauth-config", help="the OAuth configuration (of its organization) it signs in with; "
                        "changing it revokes the grants made through the old one")
    parser.add_argument("--issuer", help="the public issuer URL")
    parser.add_argument("--resource", help="the protected MCP resource URL")
    parser.add_argument("--backend", help="forward authorized MCP requests to this URL")
    parser.add_argument("--forward-upstream-token-header")
    parser.add_argument("--resource-name")
    parser.add_argument("--scope", action="append", help="a scope clients may ask for (repeat)")
    parser.add_argument("--required-scope", action="append", help="a scope every request needs (repeat)")
    parser.add_argument("--policy", action="append", metavar="KEY=SECONDS",
                        help=f"a lifetime (repeat): {', '.join(POLICY_FIELDS)}")


def add_commands(subparsers: Any) -> None:
    """Add the ``organizations``, ``oauth-configs`` and ``servers`` groups."""
    orgs = subparsers.add_parser("organizations", help="the organizations in the database")
    group = orgs.add_subparsers(dest="organizations_command", required=True)
    p = _command(group, "create", org_create, "add an organization")
    p.add_argument("name")
    p.add_argument("--display-name")
    _command(group, "list", org_list, "list the organizations")
    _command(group, "show", org_show, "show an organization").add_argument("name")
    p = _command(group, "update", org_update, "change an organization's display name")
    p.add_argument("name")
    p.add_argument("--display-name")
    _command(group, "delete", org_delete,
             "remove an organization that owns no OAuth configuration or server").add_argument("name")

    configs = subparsers.add_parser("oauth-configs", help="the upstream OAuth configurations in the database",
                                    description=_SECRET_HELP)
    group = configs.add_subparsers(dest="oauth_configs_command", required=True)
    p = _command(group, "create", config_create, "add an OAuth configuration to an organization")
    p.add_argument("name")
    p.add_argument("--organization", required=True)
    _upstream_options(p)
    p = _command(group, "list", config_list, "list the OAuth configurations (secrets never shown)")
    p.add_argument("--organization")
    for name, func, help in (("show", config_show, "show an OAuth configuration (its secret as 'set')"),
                             ("update", config_update, "edit an OAuth configuration in place (its grants are kept)"),
                             ("delete", config_delete, "remove an OAuth configuration no server uses")):
        p = _command(group, name, func, help)
        p.add_argument("name")
        p.add_argument("--organization", required=True)
        if name == "update":
            _upstream_options(p)

    servers = subparsers.add_parser("servers", help="the servers (tenants) in the database, and the file's")
    group = servers.add_subparsers(dest="servers_command", required=True)
    p = _command(group, "create", server_create, "add a server")
    p.add_argument("slug")
    _server_options(p)
    p = _command(group, "list", server_list, "list the servers, the file-managed ones (read-only) first")
    p.add_argument("--organization")
    p = _command(group, "show", server_show, "show a server")
    p.add_argument("slug")
    p = _command(group, "update", server_update,
                 "change a server; another --oauth-config revokes the grants made through the old one")
    p.add_argument("slug")
    _server_options(p)
    p.add_argument("--no-backend", action="store_true", help="stop forwarding to a backend")
    p = _command(group, "delete", server_delete, "remove a server, revoking its grants")
    p.add_argument("slug")
