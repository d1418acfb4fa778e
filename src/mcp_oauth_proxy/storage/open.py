"""Open a store from its URL: ``memory://``, ``sqlite:///path``,
``postgresql://…``, ``mysql://…`` / ``mariadb://…``."""

from __future__ import annotations

from sqlalchemy import exc

from ..core.errors import StorageUnavailable
from ..core.store import Store
from .crypto import KeyRing
from .memory import MemoryStore
from .migrations import SchemaOutdated, migrate
from .sql import DEFAULT_TIMEOUT, SqlStore, make_engine

__all__ = ["SchemaOutdated", "open_store"]


def open_store(url: str, keyring: KeyRing, *, upgrade: bool = False, timeout: float = DEFAULT_TIMEOUT) -> Store:
    """The store at ``url``. An empty database is created on first open; an
    older schema raises :class:`SchemaOutdated` unless ``upgrade``; an
    unreachable database raises StorageUnavailable. ``timeout``: seconds
    for each wait on the database (make_engine)."""
    if url.startswith("memory:"):
        return MemoryStore(keyring)
    engine = make_engine(url, timeout)
    # Migrating may take long: an engine of its own, statements unbounded;
    # but an in-memory SQLite database lives in its engine (and has no
    # statement bound to lift).
    migrating = engine if engine.dialect.name == "sqlite" else make_engine(url, timeout, bound_statements=False)
    try:
        migrate(migrating, upgrade=upgrade)
    except (exc.OperationalError, exc.InterfaceError) as error:
        engine.dispose()
        raise StorageUnavailable(f"cannot reach the database: {type(error.orig).__name__}") from error
    except BaseException:
        engine.dispose()
        raise
    finally:
        if migrating is not engine:
            migrating.dispose()
    return SqlStore(engine, keyring, timeout)
