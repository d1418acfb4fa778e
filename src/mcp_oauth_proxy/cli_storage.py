"""``mcp-oauth-proxy db upgrade | db gc | keys rotate | keys reencrypt``.

Each takes ``--database URL`` and ``--key-file PATH``, or reads them from
``--config FILE`` (its ``[server]`` table); the options win over the file.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError

from . import config as config_mod
from .core.errors import StorageUnavailable
from .housekeeping import collect
from .progress import Progress
from .storage.crypto import KeyRing
from .storage.keys import DEFAULT_KEY_FILE, ENV_KEYS, KeyConfigError, load_keyring, reencrypt, rotate
from .storage.migrations import SchemaError, migrate
from .storage.open import open_store
from .storage.sql import SqlStore, make_engine


def _settings(args: argparse.Namespace) -> tuple[str | None, str]:
    """(database URL, key file) from the options, else the config file."""
    database, key_file = args.database, args.key_file
    if args.config:
        server = config_mod.load(args.config).server
        database = database or server.database
        key_file = key_file or server.key_file
    return database, key_file or DEFAULT_KEY_FILE


def _database(args: argparse.Namespace) -> str:
    database = _settings(args)[0]
    if not database:
        raise KeyConfigError("give --database URL (or --config FILE)")
    if database.startswith("memory:"):
        raise KeyConfigError("the memory store keeps nothing to work on: give a SQL database URL")
    return database


def db_upgrade(args: argparse.Namespace) -> int:
    engine = make_engine(_database(args), bound_statements=False)  # a migration may take long
    try:
        with Progress("migrating", "migration") as progress:
            applied = migrate(engine, upgrade=True, progress=progress.advance)
    finally:
        engine.dispose()
    print(f"applied migrations {applied} in {progress.seconds:.1f} s" if applied else "the schema is up to date")
    return 0


def db_gc(args: argparse.Namespace) -> int:
    # Removing expired rows decrypts nothing: a throwaway key ring will do.
    store = open_store(_database(args), KeyRing.generate())
    with Progress("removing expired records", "record") as progress:
        total = collect(store, int(time.time()), args.batch, progress.advance)
    print(f"removed {total} expired record(s) in {progress.seconds:.1f} s")
    return 0


def keys_rotate(args: argparse.Namespace) -> int:
    if ENV_KEYS in os.environ:
        raise KeyConfigError(f"the keys come from {ENV_KEYS}: add the new key there")
    ring = rotate(_settings(args)[1])
    print(f"added key {ring.active!r}, now the active one; "
          "run `mcp-oauth-proxy keys reencrypt` to move stored records to it")
    return 0


def keys_reencrypt(args: argparse.Namespace) -> int:
    ring = load_keyring(_settings(args)[1])
    store = open_store(_database(args), ring)
    assert isinstance(store, SqlStore)
    with Progress("re-encrypting", "record") as progress:
        result = reencrypt(store, ring, batch=args.batch, progress=progress.advance)
    print(f"moved {result.moved} record(s) to key {ring.active!r}, skipped {len(result.failed)}, "
          f"in {progress.seconds:.1f} s")
    for failure in result.failed:
        print(f"cannot re-encrypt {failure} (that person signs in again)", file=sys.stderr)
    return 1 if result.failed else 0


def _command(group: Any, name: str, func: Callable[[argparse.Namespace], int], help: str,
             batch: bool = False) -> None:
    parser = group.add_parser(name, help=help)
    parser.add_argument("--database", help="the store URL (sqlite:///FILE, postgresql://…, mysql://…)")
    parser.add_argument("--key-file", help=f"the JSON key file (default {DEFAULT_KEY_FILE}; {ENV_KEYS} wins)")
    parser.add_argument("--config", help="read database and key_file from this config file")
    if batch:
        parser.add_argument("--batch", type=int, default=1000, help="records per transaction")
    parser.set_defaults(func=_reporting(func))


def _reporting(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Expected failures as one line on stderr and exit status 1."""
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (KeyConfigError, SchemaError, StorageUnavailable) as error:
            print(f"error: {error}", file=sys.stderr)
        except DBAPIError as error:
            print(f"error: the database failed: {type(error.orig).__name__}", file=sys.stderr)
        except config_mod.ConfigError as error:
            print(f"error: {args.config}: " + "; ".join(error.problems), file=sys.stderr)
        return 1

    return run


def add_commands(subparsers: Any) -> None:
    """Add the ``db`` and ``keys`` command groups to ``subparsers``."""
    db = subparsers.add_parser("db", help="the database schema and housekeeping")
    db_group = db.add_subparsers(dest="db_command", required=True)
    _command(db_group, "upgrade", db_upgrade, "migrate the schema to this version's")
    _command(db_group, "gc", db_gc, "remove expired records, in batches", batch=True)
    keys = subparsers.add_parser("keys", help="the keys that encrypt upstream tokens at rest")
    keys_group = keys.add_subparsers(dest="keys_command", required=True)
    _command(keys_group, "rotate", keys_rotate, "add a new active key to the key file")
    _command(keys_group, "reencrypt", keys_reencrypt, "move every stored record to the active key", batch=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mcp-oauth-proxy")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status
