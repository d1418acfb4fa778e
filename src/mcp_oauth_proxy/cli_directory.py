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
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError

from . import config as config_mod
from .admin.operations import (
    CLI,
    MAX_PAGE,
    AdminError,
    Invalid,
    Management,
    Page,
    config_doc,
    file_server_doc,
    organization_doc,
    server_doc,
)
from .app import _keyring, config_entries
from .core.errors import DirectoryRefused, StorageUnavailable
from .core.models import OAuthConfig, Server
from .core.store import Store
from .directory import Entry
from .storage.keys import KeyConfigError
from .storage.migrations import SchemaError
from .storage.open import open_store
from .tenants_db import POLICY_FIELDS

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
        file: tuple[Entry, ...] = config_entries(self.config, os.environ)
        self.ops = Management(self.store, file, audit_retention=self.config.server.audit_retention_days * 86400,
                              organization_backends=self.config.server.organization_backends,
                              max_servers_per_organization=self.config.server.max_servers_per_organization)
        self.json = args.json

    def close(self) -> None:
        engine = getattr(self.store, "engine", None)
        if engine is not None:
            engine.dispose()

    def say(self, text: str, doc: Any) -> None:
        print(json.dumps(doc, indent=2, sort_keys=True) if self.json else text)

    def show(self, doc: dict[str, Any]) -> None:
        self.say("\n".join(f"{k}: {'' if v is None else v}" for k, v in doc.items()), doc)


def _everything(list_page: Callable[[str | None], Page]) -> list[Any]:
    """Every item of a paginated list, page after page."""
    items: list[Any] = []
    cursor = None
    while True:
        page = list_page(cursor)
        items += page.items
        cursor = page.next
        if cursor is None:
            return items


# -- organizations ---------------------------------------------------------------


def org_create(ctx: _Context, args: argparse.Namespace) -> None:
    values = {} if args.display_name is None else {"display_name": args.display_name}
    o = ctx.ops.create_organization(CLI, args.name, values)
    ctx.say(f"created organization {o.name}", organization_doc(o))


def org_list(ctx: _Context, args: argparse.Namespace) -> None:
    orgs = _everything(lambda after: ctx.ops.organizations(CLI, MAX_PAGE, after))
    ctx.say("\n".join(f"{o.name}\t{o.display_name}" for o in orgs) or "no organizations",
            [organization_doc(o) for o in orgs])


def org_show(ctx: _Context, args: argparse.Namespace) -> None:
    ctx.show(organization_doc(ctx.ops.organization(CLI, args.name)))


def org_update(ctx: _Context, args: argparse.Namespace) -> None:
    if args.display_name is None:
        raise CliError("nothing to change: give --display-name")
    o = ctx.ops.update_organization(CLI, args.name, {"display_name": args.display_name})
    ctx.say(f"updated organization {o.name}", organization_doc(o))


def org_delete(ctx: _Context, args: argparse.Namespace) -> None:
    ctx.ops.delete_organization(CLI, args.name)  # refused while it owns configurations or servers
    ctx.say(f"deleted organization {args.name}", {"deleted": args.name})


# -- OAuth configurations ---------------------------------------------------------------

_UPSTREAM_OPTIONS = ("issuer", "domain", "tenant", "user_pool_id", "authorization_endpoint", "token_endpoint",
                     "userinfo_endpoint", "user_id_claim", "token_auth_method")


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


def _config_values(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {k: getattr(args, k) for k in ("kind", "client_id", *_UPSTREAM_OPTIONS)
                              if getattr(args, k) is not None}
    if args.scope is not None:
        values["scopes"] = list(args.scope)
    if args.pkce is not None:
        values["pkce"] = args.pkce
    secret = _secret(args)
    if secret is not None:
        values["client_secret"] = secret
    return values


def config_create(ctx: _Context, args: argparse.Namespace) -> None:
    values = _config_values(args)
    if "client_secret" not in values:
        raise CliError("give the client secret with --client-secret-env NAME or --client-secret-stdin")
    if "kind" not in values or "client_id" not in values:
        raise CliError("give --kind and --client-id")
    c = ctx.ops.create_oauth_config(CLI, args.organization, args.name, values)
    ctx.say(f"created OAuth configuration {c.organization}/{c.name}", config_doc(c))


def _where(c: OAuthConfig) -> str:
    """The provider a configuration names, in a word."""
    return c.issuer or c.domain or c.tenant or c.user_pool_id or c.authorization_endpoint or ""


def config_list(ctx: _Context, args: argparse.Namespace) -> None:
    configs = _everything(lambda after: ctx.ops.oauth_configs(CLI, args.organization, MAX_PAGE, after))
    ctx.say("\n".join(f"{c.organization}/{c.name}\t{c.kind}\t{_where(c)}"
                      for c in configs) or "no OAuth configurations", [config_doc(c) for c in configs])


def config_show(ctx: _Context, args: argparse.Namespace) -> None:
    ctx.show(config_doc(ctx.ops.oauth_config(CLI, args.organization, args.name)))


def config_update(ctx: _Context, args: argparse.Namespace) -> None:
    values = _config_values(args)
    if not values:
        raise CliError("nothing to change: give the options to change")
    c = ctx.ops.update_oauth_config(CLI, args.organization, args.name, values)
    ctx.say(f"updated OAuth configuration {c.organization}/{c.name} (the grants made through it are kept)",
            config_doc(c))


def config_delete(ctx: _Context, args: argparse.Namespace) -> None:
    ctx.ops.delete_oauth_config(CLI, args.organization, args.name)
    ctx.say(f"deleted OAuth configuration {args.organization}/{args.name}",
            {"deleted": f"{args.organization}/{args.name}"})


# -- servers ---------------------------------------------------------------------------


def _policy(items: Sequence[str]) -> dict[str, int]:
    policy = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in POLICY_FIELDS or not value.strip().lstrip("-").isdigit():
            raise CliError(f"--policy {item!r}: must be KEY=SECONDS, KEY one of {', '.join(POLICY_FIELDS)}")
        policy[key] = int(value)
    return policy


def _server_values(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {k: getattr(args, k) for k in (
        "oauth_config", "issuer", "resource", "backend", "forward_upstream_token_header", "resource_name")
        if getattr(args, k) is not None}
    if args.scope is not None:
        values["scopes"] = list(args.scope)
    if args.required_scope is not None:
        values["required_scopes"] = list(args.required_scope)
    if args.policy is not None:
        values["policy"] = _policy(args.policy)
    if args.id_jag_issuer is not None:
        values["id_jag_issuers"] = [] if args.id_jag_issuer == [""] else list(args.id_jag_issuer)
    return values


def server_create(ctx: _Context, args: argparse.Namespace) -> None:
    if args.organization is None or args.oauth_config is None or args.issuer is None or args.resource is None:
        raise CliError("give --organization, --oauth-config, --issuer and --resource")
    s = ctx.ops.create_server(CLI, args.slug, args.organization, _server_values(args))
    ctx.say(f"created server {s.slug} (every replica serves it within about two seconds)", server_doc(s))


def server_list(ctx: _Context, args: argparse.Namespace) -> None:
    docs = _everything(lambda after: ctx.ops.servers(CLI, args.organization, MAX_PAGE, after))
    ctx.say("\n".join(f"{d['slug']}\t{d['managed']}\t{d['issuer']}\t{d['resource']}" for d in docs)
            or "no servers", docs)


def server_show(ctx: _Context, args: argparse.Namespace) -> None:
    s = ctx.ops.server(CLI, args.slug)
    ctx.show(file_server_doc(s) if isinstance(s, Entry) else server_doc(s))


def server_update(ctx: _Context, args: argparse.Namespace) -> None:
    if args.organization is not None:
        raise CliError("a server's organization cannot change")
    values = _server_values(args)
    if args.no_backend:
        values["backend"] = None
    if not values:
        raise CliError("nothing to change: give the options to change")
    old = ctx.ops.server(CLI, args.slug)
    s, revoked = ctx.ops.update_server(CLI, args.slug, values)
    text = f"updated server {s.slug}"
    if isinstance(old, Server) and s.oauth_config != old.oauth_config:
        text += (f"; it signs in with {s.organization}/{s.oauth_config} now: revoked {revoked} grant(s) "
                 f"made through {old.organization}/{old.oauth_config}")
    ctx.say(text, {**server_doc(s), "revoked_grants": revoked})


def server_delete(ctx: _Context, args: argparse.Namespace) -> None:
    revoked = ctx.ops.delete_server(CLI, args.slug)
    ctx.say(f"deleted server {args.slug}; revoked {revoked} grant(s)",
            {"deleted": args.slug, "revoked_grants": revoked})


# -- the parsers ------------------------------------------------------------------------


def _option(field: str) -> str:
    """The command-line option that gave a field's value."""
    if field in ("name", "slug"):  # positional
        return field
    return "--" + {"scopes": "scope", "required_scopes": "required_scope"}.get(field, field).replace("_", "-")


def _run(func: Callable[[_Context, argparse.Namespace], None]) -> Callable[[argparse.Namespace], int]:
    """The command on the configured database; failures one line on stderr, status 1."""
    def run(args: argparse.Namespace) -> int:
        ctx = None
        try:
            ctx = _Context(args)
            func(ctx, args)
            return 0
        except Invalid as error:
            print("error: " + "; ".join(f"{_option(e.field)}: {e.detail}" for e in error.errors), file=sys.stderr)
        except (AdminError, DirectoryRefused, CliError, KeyConfigError, SchemaError, StorageUnavailable) as error:
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
    parser.add_argument("--kind", choices=[k for k in config_mod.KINDS if k != config_mod.DEV])
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
    parser.add_argument("--id-jag-issuer", action="append", metavar="ISSUER",
                        help='an issuer whose ID-JAGs it accepts (repeat; "upstream": its OAuth configuration\'s; '
                             '"" alone: none)')


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
    p = _command(group, "list", server_list, "list the servers by slug, the file-managed ones (read-only) among them")
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
