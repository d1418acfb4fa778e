"""Open a store from its URL: ``memory://``, ``sqlite:///path``,
``postgresql://…``, ``mysql://…`` / ``mariadb://…``."""

from __future__ import annotations

from sqlalchemy import exc

from ..core.errors import StorageUnavailable
from ..core.store import Store
from .crypto import KeyRing
from .memory import MemoryStore
from .migrations import SchemaOutdated, migrate
from .sql import SqlStore, make_engine

__all__ = ["SchemaOutdated", "open_store"]


def open_store(url: str, keyring: KeyRing, *, upgrade: bool = False) -> Store:
    """The store at ``url``. An empty database is created on first open; an
    older schema raises :class:`SchemaOutdated` unless ``upgrade``; an
    unreachable database raises StorageUnavailable."""
    if url.startswith("memory:"):
        return MemoryStore(keyring)
    engine = make_engine(url)
    try:
        migrate(engine, upgrade=upgrade)
    except (exc.OperationalError, exc.InterfaceError) as error:
        engine.dispose()
        raise StorageUnavailable(f"cannot reach the database: {type(error.orig).__name__}") from error
    except BaseException:
        engine.dispose()
        raise
    return SqlStore(engine, keyring)
