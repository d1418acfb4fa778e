"""The ``mcp-oauth-proxy`` command: ``serve`` runs the server (on uvicorn,
or on Hypercorn and trio with ``--trio``); ``check-config`` reports every
problem of a config file without serving; ``db``, ``keys`` (cli_storage.py)
``organizations``, ``oauth-configs``, ``servers`` (cli_directory.py) and
``admin``, ``clients``, ``grants``, ``audit`` (cli_admin.py) work on the
database."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from . import cli_admin, cli_directory, cli_storage
from . import config as config_mod
from .adapters.access_log import AccessLog
from .core.store import traits_of
from .housekeeping import Turns, Wake, collect_periodically, follow_directory, follow_revocations, relay_notices
from .logs import configure_logging
from .storage.notices import DIRECTORY, REVOCATION
from .storage.token_cache import TokenCache

if TYPE_CHECKING:
    from .app import ServerApp

log = logging.getLogger("mcp_oauth_proxy")


def _load(path: str) -> config_mod.Config | None:
    try:
        return config_mod.load(path)
    except config_mod.ConfigError as exc:
        print(f"{path}: configuration errors:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def check_config(args: argparse.Namespace) -> int:
    config = _load(args.file)
    if config is None:
        return 1
    for warning in config_mod.warnings(config, os.environ):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.file}: ok ({len(config.tenants)} tenant(s))")
    return 0


async def _serve(app: Any, config: config_mod.Config, on: str) -> None:
    from .app import build_admin_app
    from .serving import serve

    stop = anyio.Event()

    async def until_signalled() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("stopping on %s", signal.Signals(signum).name)
                stop.set()
                return

    log.info("serving %d tenant(s) on http://%s", len(config.tenants), config.server.listen)
    # Housekeeping runs beside the server, in a scope of its own, so that
    # stopping it does not cancel the server's shutdown.
    housekeeping = anyio.CancelScope()

    store = app.site.store

    async def housekeep() -> None:
        with housekeeping:
            async with anyio.create_task_group() as chores:
                if config.server.gc_interval:
                    chores.start_soon(collect_periodically, store, config.server.gc_interval, config.server.gc_batch)
                turns = Turns()  # the two looks each second take turns at one connection
                wakes = {REVOCATION: Wake(), DIRECTORY: Wake()}  # or sooner, when a change is announced
                if isinstance(store, TokenCache) and store.traits.shared:  # shared with other processes
                    chores.start_soon(partial(follow_revocations, store, turns=turns, wake=wakes[REVOCATION]))
                if traits_of(store).shared:  # servers kept in the database, changed by any process
                    chores.start_soon(partial(follow_directory, app.site.directory, turns=turns,
                                              wake=wakes[DIRECTORY]))
                notices = traits_of(store).notices
                if notices is not None:
                    chores.start_soon(relay_notices, notices, wakes)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(housekeep)
        watching = anyio.CancelScope()

        async def watch() -> None:
            with watching:
                await until_signalled()

        tasks.start_soon(watch)
        admin = config.server.admin_listen
        if admin is not None:
            log.info("serving the admin API on http://%s/admin/api/v1/", admin)
            tasks.start_soon(serve, build_admin_app(config, app.site), attrs.evolve(config.server, listen=admin),
                             stop.wait, on)
        await serve(app, config.server, stop.wait, on)
        stop.set()  # the admin listener stops with the public one
        watching.cancel()
        housekeeping.cancel()


def run_server(app: Any, config: config_mod.Config, on: str = "uvicorn") -> None:
    """Serve ``app`` (built from ``config``) on server ``on`` (serving.SERVERS)
    until SIGINT or SIGTERM, expired records collected beside it."""
    from .descriptors import quiet_accept_failures, raise_limit
    from .serving import event_loop

    raise_limit()
    quiet_accept_failures()
    # What start-up built lives as long as the server: frozen, later garbage
    # collections no longer walk it (measured: bench/bench_guard.py).
    gc.freeze()
    anyio.run(_serve, app, config, on, **event_loop(on))


def serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    from .app import build_app
    from .core.errors import StorageUnavailable
    from .storage.keys import KeyConfigError
    from .storage.migrations import SchemaError
    from .upstream.egress import EgressError

    for warning in config_mod.warnings(config, os.environ):
        log.warning("%s", warning)
    try:
        app: ServerApp | AccessLog = build_app(config, upgrade=args.upgrade)
    except (SchemaError, StorageUnavailable, KeyConfigError, EgressError, OSError) as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    if config.server.access_log:
        app = AccessLog(app, app.site)
    run_server(app, config, "hypercorn-trio" if args.trio else "uvicorn")
    _leave_stuck_calls(config.server.database_timeout)
    return 0


def _leave_stuck_calls(grace: float) -> None:
    """Once the server has stopped: worker threads still in a store call get
    ``grace`` seconds, then the process ends without them. A database that
    swallows packets leaves a call waiting for ever where its driver has no
    read timeout (psycopg), and the interpreter would wait for it at exit."""
    deadline = time.monotonic() + grace
    waiting = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    for thread in waiting:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = sum(t.is_alive() for t in waiting)
    if stuck:
        log.warning("stopped with %d call(s) still waiting for the database; not waiting for them", stuck)
        logging.shutdown()
        os._exit(0)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="mcp-oauth-proxy", description=__doc__)
    top.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    top.add_argument("--log-json", action="store_true", help="log JSON lines")
    commands = top.add_subparsers(dest="command", required=True)

    run = commands.add_parser("serve", help="run the server")
    run.add_argument("--config", required=True, help="the TOML config file")
    run.add_argument("--trio", action="store_true", help="run on Hypercorn and trio instead of uvicorn and asyncio")
    run.add_argument("--upgrade", action="store_true",
                     help="migrate an older database schema before serving (else serve refuses it)")
    run.set_defaults(func=serve)

    check = commands.add_parser("check-config", help="report the problems of a config file")
    check.add_argument("file")
    check.set_defaults(func=check_config)

    cli_storage.add_commands(commands)
    cli_directory.add_commands(commands)
    cli_admin.add_commands(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(args.log_level, args.log_json)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
