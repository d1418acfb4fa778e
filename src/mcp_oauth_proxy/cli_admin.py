"""``mcp-oauth-proxy admin | clients | grants | audit``: admin tokens, the
clients registered to a server, people's grants and the audit log, in the
database named by ``--config FILE``, with the admin API's rules
(admin/operations.py). ``--json`` prints JSON; any failure is one line on
stderr and exit status 1."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .admin.operations import CLI, MAX_PAGE, audit_doc, client_doc, grant_doc
from .admin.tokens import new_token
from .cli_directory import CliError, _command, _Context, _everything


def token_create(ctx: _Context, args: argparse.Namespace) -> None:
    if args.organization is not None:
        ctx.ops.organization(CLI, args.organization)
    token, record = new_token(args.organization, args.label or "")
    ctx.store.create_admin_token(token=record)
    ctx.ops.audit(CLI, "admin_token_created", organization=args.organization, token_id=record.token_id)
    scope = f"organization {args.organization}" if args.organization else "every organization (global)"
    # The token itself is printed once, here, and kept nowhere.
    ctx.say(f"{token}\n(admin token {record.token_id} for {scope}: shown once, keep it secret)",
            {"token": token, "token_id": record.token_id, "organization": args.organization})


def token_list(ctx: _Context, args: argparse.Namespace) -> None:
    docs = [{"token_id": t.token_id, "label": t.label, "organization": t.organization, "created_at": t.created_at}
            for t in ctx.store.list_admin_tokens()]
    ctx.say("\n".join(f"{d['token_id']}\t{d['organization'] or '(global)'}\t{d['label']}" for d in docs)
            or "no admin tokens", docs)


def token_revoke(ctx: _Context, args: argparse.Namespace) -> None:
    if not ctx.store.delete_admin_token(token_id=args.token_id):
        raise CliError(f"no admin token {args.token_id!r}")
    ctx.ops.audit(CLI, "admin_token_revoked", token_id=args.token_id)
    ctx.say(f"revoked admin token {args.token_id}", {"revoked": args.token_id})


def client_list(ctx: _Context, args: argparse.Namespace) -> None:
    clients = _everything(lambda after: ctx.ops.clients(CLI, args.server, MAX_PAGE, after))
    ctx.say("\n".join(f"{c.client_id}\t{c.client_name or ''}\t{' '.join(c.redirect_uris)}" for c in clients)
            or "no clients", [client_doc(c) for c in clients])


def client_create(ctx: _Context, args: argparse.Namespace) -> None:
    values: dict[str, Any] = {"grant_types": args.grant or ["client_credentials"],
                              "token_endpoint_auth_method": args.auth_method}
    for name in ("client_name", "scope", "jwks_uri"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.jwks_file is not None:
        try:
            with open(args.jwks_file, encoding="utf-8") as f:
                values["jwks"] = json.load(f)
        except (OSError, ValueError) as exc:
            raise CliError(f"--jwks-file: {exc}") from None
    client, secret = ctx.ops.create_machine_client(CLI, args.server, values)
    doc = client_doc(client)
    if secret is not None:
        doc["client_secret"] = secret
    # The secret is printed once, here, and kept nowhere.
    text = f"client_id: {client.client_id}"
    if secret is not None:
        text += f"\nclient_secret: {secret}\n(shown once, keep it secret)"
    ctx.say(text, doc)


def client_delete(ctx: _Context, args: argparse.Namespace) -> None:
    revoked = ctx.ops.delete_client(CLI, args.server, args.client_id)
    ctx.say(f"deleted client {args.client_id}; revoked {revoked} grant(s)",
            {"deleted": args.client_id, "revoked_grants": revoked})


def grant_list(ctx: _Context, args: argparse.Namespace) -> None:
    grants = _everything(lambda after: ctx.ops.grants(CLI, server=args.server, user_id=args.user,
                                                      client_id=args.client, limit=MAX_PAGE, after=after))
    ctx.say("\n".join(f"{g.tenant}\t{g.grant_id}\t{g.user_id}\t{g.client_id}" for g in grants) or "no grants",
            [grant_doc(g) for g in grants])


def grant_revoke(ctx: _Context, args: argparse.Namespace) -> None:
    g = ctx.ops.revoke_grant(CLI, args.server, args.grant_id)
    ctx.say(f"revoked grant {g.grant_id} of {g.user_id} to {g.client_id} (every replica refuses its tokens "
            "within about two seconds)", {"revoked": grant_doc(g)})


def audit_list(ctx: _Context, args: argparse.Namespace) -> None:
    page = ctx.ops.audit_events(CLI, server=args.server, user_id=args.user, client_id=args.client,
                                event=args.event, since=args.since, until=args.until, limit=args.limit)
    docs = [audit_doc(e) for e in page.items]
    ctx.say("\n".join(f"{d['at']}\t{d['event']}\t{d['server'] or d['organization'] or ''}\t{d['user_id'] or ''}\t"
                      f"{d['actor'] or ''}" for d in docs) or "no events", docs)


def add_commands(subparsers: Any) -> None:
    """Add the ``admin``, ``clients``, ``grants`` and ``audit`` groups."""
    admin = subparsers.add_parser("admin", help="admin API tokens")
    group = admin.add_subparsers(dest="admin_command", required=True)
    p = _command(group, "create-token", token_create,
                 "make an admin API token (printed once; only its hash is kept)")
    p.add_argument("--organization", help="limit it to one organization's records (default: global)")
    p.add_argument("--label", help="what it is for, shown in lists")
    _command(group, "list-tokens", token_list, "list admin tokens (never the tokens themselves)")
    _command(group, "revoke-token", token_revoke, "revoke an admin token").add_argument("token_id")

    clients = subparsers.add_parser("clients", help="the clients registered to a server")
    group = clients.add_subparsers(dest="clients_command", required=True)
    _command(group, "list", client_list, "list a server's registered clients").add_argument("server")
    p = _command(group, "create", client_create,
                 "register a client without a browser (client credentials, ID-JAG); a secret is printed once")
    p.add_argument("server")
    p.add_argument("--grant", action="append", choices=("client_credentials", "jwt-bearer"),
                   help="a grant it may use (repeat; default client_credentials)")
    p.add_argument("--auth-method", default="client_secret_basic",
                   choices=("client_secret_basic", "client_secret_post", "private_key_jwt"))
    p.add_argument("--jwks-file", help="private_key_jwt: a file holding the client's public keys (a JWK Set)")
    p.add_argument("--jwks-uri", help="private_key_jwt: where the client publishes its public keys")
    p.add_argument("--scope", help="the scopes it may have, space separated (default: all the server's)")
    p.add_argument("--name", dest="client_name", help="what it is, shown in lists")
    p = _command(group, "delete", client_delete, "remove a registered client, revoking its grants")
    p.add_argument("server")
    p.add_argument("client_id")

    grants = subparsers.add_parser("grants", help="people's live grants")
    group = grants.add_subparsers(dest="grants_command", required=True)
    p = _command(group, "list", grant_list, "list live grants")
    p.add_argument("--server")
    p.add_argument("--user", help="a person's user id")
    p.add_argument("--client", help="a client id")
    p = _command(group, "revoke", grant_revoke, "revoke a grant: its tokens stop working on every replica")
    p.add_argument("server")
    p.add_argument("grant_id")

    audit = subparsers.add_parser("audit", help="the audit log")
    group = audit.add_subparsers(dest="audit_command", required=True)
    p = _command(group, "list", audit_list, "list audit events, newest first")
    p.add_argument("--server")
    p.add_argument("--user", help="a person's user id")
    p.add_argument("--client", help="a client id")
    p.add_argument("--event", help="an event name, like login_completed or admin.server_created")
    p.add_argument("--since", type=int, metavar="UNIX_TIME")
    p.add_argument("--until", type=int, metavar="UNIX_TIME")
    p.add_argument("--limit", type=int, default=100)
