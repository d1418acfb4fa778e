"""Alembic's environment for the store's schema.

The program drives it (storage/migrations.py): the connection comes in
``config.attributes["connection"]``, inside a transaction that holds the
migration lock, and is left to the caller to commit. A developer may also
run the ``alembic`` command from the repository with ``-x url=…``
([tool.alembic] in pyproject.toml).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from mcp_oauth_proxy.storage import schema
from mcp_oauth_proxy.storage.migrations import compare_server_default, include_name
from mcp_oauth_proxy.storage.sql import make_engine


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=schema.metadata,
                      compare_server_default=compare_server_default, include_name=include_name)
    with context.begin_transaction():  # nothing of its own inside the caller's transaction
        context.run_migrations()


def _online() -> None:
    given = context.config.attributes.get("connection")
    if given is not None:
        _run(given)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the database: alembic -x url=sqlite:///FILE …")
    engine = make_engine(url, bound_statements=False)
    try:
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode is not supported: run against a database")
_online()
