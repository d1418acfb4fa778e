"""PostgreSQL's LISTEN/NOTIFY: a change to the directory or a revocation is
announced (``pg_notify``, in the transaction that makes it, so delivered
when it commits) and every replica listening hears it at once, instead of at
its next look a second later. Elsewhere (SQLite, MariaDB) the looks alone
carry changes; on PostgreSQL they stay, as the safety net for a notice lost
with its connection."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Connection, Engine, text

from ..core.errors import StorageUnavailable

CHANNEL = "mcp_oauth_proxy"
DIRECTORY = "directory"
REVOCATION = "revocation"

_NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', :topic)")


def notify(conn: Connection, topic: str) -> None:
    """Announce ``topic`` when the transaction of ``conn`` commits."""
    conn.execute(_NOTIFY, {"topic": topic})


class Listener:
    """One connection of its own, listening; :meth:`wait` is called from one
    worker thread at a time (housekeeping.relay_notices)."""

    def __init__(self, engine: Engine, connect_timeout: float) -> None:
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._connect_timeout = max(1, int(connect_timeout))
        self._conn: Any = None  # a psycopg connection (the postgresql extra; imported when used)
        self._lock = threading.Lock()

    def wait(self, timeout: float) -> set[str]:
        """The topics announced within ``timeout`` seconds (returning at the
        first); empty if none. StorageUnavailable if the database is away."""
        import psycopg

        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self._conninfo, autocommit=True,
                                                 connect_timeout=self._connect_timeout)
                    self._conn.execute(f"LISTEN {CHANNEL}")
                return {n.payload for n in self._conn.notifies(timeout=timeout, stop_after=1)}
            except psycopg.Error as error:
                self._close()
                raise StorageUnavailable(f"listening for changes failed: {type(error).__name__}") from error

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - psycopg.Error or any other: it is gone either way
                pass
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._close()
