"""The SQL store (SQLAlchemy Core): SQLite, PostgreSQL, MariaDB/MySQL.

Each method is one transaction whose precondition is checked by the database
itself (``DELETE … RETURNING``, conditional ``UPDATE``), so several server
processes can share one database. Semantics mirror :mod:`.memory` exactly.
Connection failures surface as :class:`~..core.errors.StorageUnavailable`,
which the core answers with a 503.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

import attrs
import cattrs
from sqlalchemy import (
    BindParameter,
    Connection,
    Engine,
    Table,
    bindparam,
    create_engine,
    delete,
    event,
    exc,
    func,
    make_url,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL
from sqlalchemy.pool import StaticPool

from ..core.errors import DecryptionFailed, DirectoryRefused, StorageUnavailable
from ..core.models import (
    AccessToken,
    AdminToken,
    AuditEvent,
    AuthorizationRequest,
    AuthSession,
    Client,
    CodeGrant,
    ConnectionsSignIn,
    ConsentRequest,
    DirectoryState,
    Grant,
    GrantInfo,
    OAuthConfig,
    Organization,
    Redemption,
    RefreshToken,
    Revocation,
    Rotation,
    Server,
    UpstreamTokens,
)
from ..core.store import ENDED_MARK, REPLACED, REVOCATION_RECORD, StoreTraits, withdrawn_mark
from . import directory_rules as rules
from .crypto import (
    KeyRing,
    open_client_secret,
    open_upstream,
    open_verifier,
    seal_client_secret,
    seal_upstream,
    seal_verifier,
)
from .notices import DIRECTORY, REVOCATION, Listener, notify
from .schema import (
    EXPIRING,
    access_tokens,
    admin_tokens,
    audit_events,
    auth_sessions,
    clients,
    codes,
    consent_requests,
    counters,
    directory_version,
    grants,
    oauth_configs,
    organizations,
    refresh_tokens,
    revocations,
    servers,
)

log = logging.getLogger("mcp_oauth_proxy")
T = TypeVar("T")
R = TypeVar("R")

_convert = cattrs.Converter()

# auth_sessions.request says what a login is for: a client's authorization
# request, as every row held before connections sign-ins existed (so those
# rows read as they always did), or a sign-in to the connections page,
# tagged. Said outright rather than told apart by which fields are there.
_LoginPurpose = AuthorizationRequest | ConnectionsSignIn
_CONNECTIONS = {"purpose": "connections"}


def _unstructure_purpose(purpose: _LoginPurpose) -> dict[str, Any]:
    if isinstance(purpose, ConnectionsSignIn):
        return dict(_CONNECTIONS)
    data: dict[str, Any] = _convert.unstructure(purpose, AuthorizationRequest)
    return data


def _structure_purpose(data: dict[str, Any], _: Any) -> _LoginPurpose:
    if data == _CONNECTIONS:
        return ConnectionsSignIn()
    return _convert.structure(data, AuthorizationRequest)


_convert.register_unstructure_hook(_LoginPurpose, _unstructure_purpose)
_convert.register_structure_hook(_LoginPurpose, _structure_purpose)
_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg",
            "mysql": "mysql+pymysql", "mariadb": "mysql+pymysql"}
# Errors after which the whole transaction was rolled back and may simply run
# again: serialization failure and deadlock (SQLSTATE), MySQL's deadlock.
_RETRY_PG = {"40001", "40P01"}
_RETRY_MYSQL = {1213}
_ATTEMPTS = 3
# Connections kept open, and how many more may be opened (and closed again)
# for callers beyond those: under ASGI the performer runs no more store calls
# at once than the pool keeps (SqlStore.traits.concurrency), so the overflow serves
# WSGI threads, housekeeping and the CLI, and a busy server reuses its
# connections instead of opening one per call.
POOL_SIZE, POOL_OVERFLOW = 10, 10
# Seconds any one wait on the database may last (make_engine).
DEFAULT_TIMEOUT = 5.0


def sqlalchemy_url(url: str) -> URL:
    """The URL with the driver this project installs (psycopg 3, PyMySQL)."""
    parsed = make_url(url)
    driver = _DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed


def make_engine(url: str | URL, timeout: float = DEFAULT_TIMEOUT, *, bound_statements: bool = True,
                **options: Any) -> Engine:
    """An engine tuned for the store; ``options`` go to ``create_engine``
    (``pool_size``, ``connect_args``, …).

    ``timeout`` (seconds) bounds each wait on the database: for a pooled
    connection, to connect, and for a statement (PostgreSQL: the server's
    ``statement_timeout``, and ``tcp_user_timeout`` for a query the network
    swallows; MariaDB/MySQL: the client's read and write timeouts; SQLite:
    the busy timeout, its wait for the write lock). Past it the call fails
    with StorageUnavailable. ``bound_statements=False`` leaves statements
    unbounded, for migrations (DDL on a large table, or another process's
    migration to wait for, may take long).

    SQLite: WAL (readers never wait for the writer), and ``BEGIN IMMEDIATE``
    for write transactions, so concurrent writers queue for the lock instead
    of failing on upgrading a read lock.
    """
    parsed = sqlalchemy_url(url) if isinstance(url, str) else url
    options["hide_parameters"] = True  # errors never echo a row
    backend = parsed.get_backend_name()
    given = options.pop("connect_args", {})
    if backend == "sqlite":
        in_memory = parsed.database in (None, "", ":memory:")
        options["connect_args"] = {"check_same_thread": False, "timeout": timeout, **given}
        if in_memory:
            options["poolclass"] = StaticPool
            options.pop("pool_size", None)
            options.pop("max_overflow", None)
        else:
            _default_pool(options, timeout)
        engine = create_engine(parsed, **options)
        _tune_sqlite(engine, wal=not in_memory, busy_timeout_ms=round(timeout * 1000))
        return engine
    _default_pool(options, timeout)
    if backend in ("mysql", "mariadb"):
        # Fewer gap locks than REPEATABLE READ; every precondition is in the
        # statement itself, so READ COMMITTED is enough.
        options.setdefault("isolation_level", "READ COMMITTED")
        options.setdefault("pool_recycle", 3600)  # under the server's wait_timeout
        waits = {"read_timeout": timeout, "write_timeout": timeout} if bound_statements else {}
        options["connect_args"] = {"connect_timeout": timeout, **waits, **given}
    elif backend == "postgresql":
        options["connect_args"] = {**_postgresql_timeouts(parsed, timeout, bound_statements), **given}
    else:
        options["connect_args"] = given
    return create_engine(parsed, **options)


def _postgresql_timeouts(url: URL, timeout: float, bound_statements: bool) -> dict[str, Any]:
    milliseconds = max(1, round(timeout * 1000))
    waits: dict[str, int | str] = {
        "connect_timeout": max(1, math.ceil(timeout)),  # whole seconds (libpq; psycopg waits 2 at least)
        # Linux: a query the network swallows (never acknowledged) fails
        # instead of waiting out TCP's retransmissions (about 15 minutes).
        "tcp_user_timeout": milliseconds,
    }
    if bound_statements:
        # Added to the URL's own server options (a search_path, say), not in their place.
        given = url.query.get("options", ())
        given = (given,) if isinstance(given, str) else given  # a parameter given twice is a tuple
        waits["options"] = " ".join([*given, f"-c statement_timeout={milliseconds}"])
    return waits


def _default_pool(options: dict[str, Any], timeout: float) -> None:
    if "poolclass" not in options and "pool" not in options:  # another pool takes its own options
        options.setdefault("pool_size", POOL_SIZE)
        options.setdefault("max_overflow", POOL_OVERFLOW)
        options.setdefault("pool_timeout", timeout)


def _tune_sqlite(engine: Engine, *, wal: bool, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_conn.cursor()
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # A read is one SELECT, atomic by itself; a write takes the lock first.
        if conn.get_execution_options().get("sqlite_write", False):
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def _mark_key(name: str) -> str:
    """A mark's counter row, keyed as hit_counter keys its own."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def _row(record: Any, **override: Any) -> dict[str, Any]:
    row: dict[str, Any] = _convert.unstructure(record)
    row.update(override)
    return row


def _record(cls: type[T], row: Mapping[Any, Any], **override: Any) -> T:
    return _convert.structure({**row, **override}, cls)


def _retryable(error: exc.DBAPIError) -> bool:
    orig = error.orig
    if getattr(orig, "sqlstate", None) in _RETRY_PG:
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in _RETRY_MYSQL


def _live_grant(tenant: Any, grant_id: Any) -> Any:
    """A condition: the grant exists and is not revoked."""
    return (
        select(grants.c.grant_id)
        .where(grants.c.tenant == tenant, grants.c.grant_id == grant_id, grants.c.revoked.is_(False))
        .exists()
    )


def _token_by_hash(table: Table) -> Any:
    # Built once: the guard runs this on every request to the resource.
    tenant: BindParameter[str] = bindparam("tenant")
    return select(table).where(
        table.c.tenant == tenant, table.c.token_hash == bindparam("token_hash"), _live_grant(tenant, table.c.grant_id)
    )


_TOKEN_BY_HASH = {t.name: _token_by_hash(t) for t in (access_tokens, refresh_tokens)}

# What an operator sees of a grant (never its upstream tokens), and of an
# audit event (not when it expires).
_GRANT_INFO = [grants.c[f.name] for f in attrs.fields(GrantInfo)]
_AUDIT_EVENT = [audit_events.c[f.name] for f in attrs.fields(AuditEvent)]


def _live_at(now: int) -> Any:
    """A condition: the grant is live (not revoked, unexpired at ``now``)."""
    return grants.c.revoked.is_(False) & (grants.c.expires_at > now)


def _of_organization(tenant: Any, organization: str) -> Any:
    """A condition: the tenant is one of the organization's servers."""
    return tenant.in_(select(servers.c.slug).where(servers.c.organization == organization))


def _audit_row(event: AuditEvent, keep_until: int) -> dict[str, Any]:
    row = _row(event, expires_at=keep_until)
    del row["event_id"]  # the database numbers it
    if event.organization is None and event.tenant is not None:
        # A flow's event belongs to the organization owning its server now:
        # one that later owns a server of that slug does not see it.
        row["organization"] = select(servers.c.organization).where(
            servers.c.slug == event.tenant).scalar_subquery()
    return row


class SqlStore:
    def __init__(self, engine_or_url: Engine | str, keyring: KeyRing, timeout: float = DEFAULT_TIMEOUT) -> None:
        """``timeout``: the engine's (make_engine), which an async caller
        also holds each call to, in case the driver's own waits fall short
        (a database that accepts bytes and never answers)."""
        self.engine = engine_or_url if isinstance(engine_or_url, Engine) else make_engine(engine_or_url, timeout)
        self.timeout = timeout
        self.keyring = keyring
        self._writer = self.engine.execution_options(sqlite_write=True)
        dialect = self.engine.dialect.name
        self._dialect = "mysql" if dialect == "mariadb" else dialect
        # Upserts by (table, columns): see _upsert.
        self._upserts: dict[tuple[str, tuple[str, ...]], Any] = {}
        # In-memory SQLite (or any StaticPool) is one connection shared by
        # every thread: take turns.
        memory = dialect == "sqlite" and self.engine.url.database in (None, "", ":memory:")
        one_connection = memory or isinstance(self.engine.pool, StaticPool)
        self._turns: AbstractContextManager[Any] = threading.Lock() if one_connection else nullcontext()
        # How many calls the pool keeps connections for (None: no bound of its own).
        size = getattr(self.engine.pool, "size", None)
        kept = size() if callable(size) else 0
        # PostgreSQL announces changes to every replica (storage/notices.py).
        self._listener = Listener(self.engine, timeout) if self._dialect == "postgresql" else None
        self.traits = StoreTraits(blocks=True, shared=True, pool=self.engine, timeout=timeout,
                                  concurrency=1 if one_connection else (kept if kept > 0 else None),
                                  notices=None if self._listener is None else self._listener.wait,
                                  schema_current=self.schema_current)

    def schema_current(self) -> bool:
        """The database answers, at the schema version this program knows."""
        from .migrations import head_version, version_of

        return self._read(version_of) == head_version()

    # -- running transactions ----------------------------------------------------
    def _run(self, op: Callable[[Connection], R], *, write: bool) -> R:
        """Run ``op`` in one transaction; a deadlock victim runs again."""
        engine = self._writer if write else self.engine
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self._turns, engine.connect() as conn, conn.begin():
                    return op(conn)
            except exc.DBAPIError as error:
                if attempt < _ATTEMPTS and _retryable(error):
                    continue
                if isinstance(error, (exc.OperationalError, exc.InterfaceError)) or error.connection_invalidated:
                    raise StorageUnavailable(f"the database failed: {type(error.orig).__name__}") from error
                raise
            except exc.TimeoutError as error:  # no pooled connection came free
                raise StorageUnavailable("the database connection pool is exhausted") from error
        raise AssertionError("unreachable")

    def _write(self, op: Callable[[Connection], R]) -> R:
        return self._run(op, write=True)

    def _read(self, op: Callable[[Connection], R]) -> R:
        return self._run(op, write=False)

    def _upsert(self, conn: Connection, table: Table, row: dict[str, Any], **on_conflict: Any) -> None:
        """Insert, or replace the row with the same primary key (as the memory
        store's dict assignment does); ``on_conflict`` overrides columns of
        the replacement with expressions on the existing row."""
        if on_conflict:
            conn.execute(self._upsert_of(table, tuple(row), on_conflict), row)
            return
        # Made once per table and set of columns, its values bound as it runs:
        # building it cost more than the database's own work (a refresh
        # grant's rotation: about 2.1 ms of its 2.95, measured).
        key = (table.name, tuple(row))
        statement = self._upserts.get(key)
        if statement is None:
            statement = self._upserts[key] = self._upsert_of(table, key[1], {})
        conn.execute(statement, row)

    def _upsert_of(self, table: Table, columns: tuple[str, ...], on_conflict: dict[str, Any]) -> Any:
        keys = {c.name for c in table.primary_key.columns}
        if self._dialect == "mysql":
            mysql = mysql_insert(table)
            return mysql.on_duplicate_key_update(
                {**{k: mysql.inserted[k] for k in columns if k not in keys}, **on_conflict})
        upsert = (pg_insert if self._dialect == "postgresql" else sqlite_insert)(table)
        return upsert.on_conflict_do_update(
            index_elements=list(keys), set_={**{k: upsert.excluded[k] for k in columns if k not in keys},
                                             **on_conflict})

    @staticmethod
    def _take(conn: Connection, table: Table, tenant: str, key: str, value: str) -> Any:
        """Delete one row and return it: whoever deletes it, wins."""
        stmt = delete(table).where(table.c.tenant == tenant, table.c[key] == value).returning(*table.c)
        return conn.execute(stmt).mappings().first()

    # -- clients -------------------------------------------------------------------
    def save_client(self, client: Client) -> None:
        self._write(lambda c: self._upsert(c, clients, _row(client)))

    def get_client(self, tenant: str, client_id: str) -> Client | None:
        row = self._read(lambda c: c.execute(select(clients).where(
            clients.c.tenant == tenant, clients.c.client_id == client_id)).mappings().first())
        return None if row is None else _record(Client, row)

    def hit_counter(self, key: str, window_start: int, expires_at: int) -> int:
        key_hash = hashlib.sha256(key.encode("utf-8")).hexdigest()
        row = {"key_hash": key_hash, "window_start": window_start, "count": 1, "expires_at": expires_at}
        current = select(counters.c.count).where(counters.c.key_hash == key_hash,
                                                 counters.c.window_start == window_start)

        def op(conn: Connection) -> int:
            # The upsert's row lock is held to commit: the count read is ours.
            self._upsert(conn, counters, row, count=counters.c.count + 1)
            return int(conn.execute(current).scalar_one())

        return self._write(op)

    # A signed-out session, a client's withdrawn approvals: marks, each a
    # row of counters (window 0, its count the value), so housekeeping
    # deletes it with them once expired.
    def _set_mark(self, name: str, value: int, expires_at: int) -> None:
        row = {"key_hash": _mark_key(name), "window_start": 0, "count": value, "expires_at": expires_at}
        self._write(lambda c: self._upsert(c, counters, row))

    def _mark(self, name: str, now: int) -> int | None:
        found = select(counters.c.count).where(counters.c.key_hash == _mark_key(name), counters.c.window_start == 0,
                                               counters.c.expires_at > now)
        value = self._read(lambda c: c.execute(found).scalar())
        return None if value is None else int(value)

    def end_session(self, session_hash: str, expires_at: int) -> None:
        self._set_mark(ENDED_MARK + session_hash, 1, expires_at)

    def session_ended(self, session_hash: str, now: int) -> bool:
        return self._mark(ENDED_MARK + session_hash, now) is not None

    def withdraw_approvals(self, tenant: str, client_id: str, at: int, expires_at: int) -> None:
        self._set_mark(withdrawn_mark(tenant, client_id), at, expires_at)

    def approvals_withdrawn(self, tenant: str, client_id: str, now: int) -> int | None:
        return self._mark(withdrawn_mark(tenant, client_id), now)

    # -- consent and sessions --------------------------------------------------------
    def save_consent_request(self, consent: ConsentRequest) -> None:
        self._write(lambda c: self._upsert(c, consent_requests, _row(consent)))

    def take_consent_request(self, tenant: str, id_hash: str, now: int) -> ConsentRequest | None:
        row = self._write(lambda c: self._take(c, consent_requests, tenant, "id_hash", id_hash))
        return None if row is None or row["expires_at"] <= now else _record(ConsentRequest, row)

    def save_auth_session(self, session: AuthSession) -> None:
        sealed = seal_verifier(self.keyring, session.tenant, session.state_hash, session.upstream_code_verifier)
        self._write(lambda c: self._upsert(c, auth_sessions, _row(session, upstream_code_verifier=sealed)))

    def take_auth_session(self, tenant: str, state_hash: str, now: int) -> AuthSession | None:
        row = self._write(lambda c: self._take(c, auth_sessions, tenant, "state_hash", state_hash))
        if row is None or row["expires_at"] <= now:
            return None
        verifier = open_verifier(self.keyring, tenant, state_hash, row["upstream_code_verifier"])
        return _record(AuthSession, row, upstream_code_verifier=verifier)

    # -- grants and codes --------------------------------------------------------------
    def save_grant_and_code(self, grant: Grant, code: CodeGrant) -> None:
        assert grant.upstream is not None, "a grant with a code has upstream tokens"
        sealed = seal_upstream(self.keyring, grant.tenant, grant.grant_id, grant.upstream)

        def op(conn: Connection) -> None:
            self._upsert(conn, grants, _row(grant, upstream=sealed))
            self._upsert(conn, codes, _row(code))

        self._write(op)

    def save_grant_and_token(self, grant: Grant, access: AccessToken) -> None:
        def op(conn: Connection) -> None:
            self._upsert(conn, grants, {**_row(grant), "last_used_at": access.issued_at})
            self._upsert(conn, access_tokens, _row(access))

        self._write(op)

    def get_code(self, tenant: str, code_hash: str, now: int) -> CodeGrant | None:
        stmt = select(codes).where(codes.c.tenant == tenant, codes.c.code_hash == code_hash, codes.c.expires_at > now)
        row = self._read(lambda c: c.execute(stmt).mappings().first())
        return None if row is None else _record(CodeGrant, row)

    def take_code(self, tenant: str, code_hash: str, now: int) -> CodeGrant | None:
        row = self._write(lambda c: self._take(c, codes, tenant, "code_hash", code_hash))
        return None if row is None or row["expires_at"] <= now else _record(CodeGrant, row)

    def redeem_code(
        self, tenant: str, code_hash: str, now: int, access: AccessToken, refresh: RefreshToken | None,
        keep_client: bool, event: AuditEvent | None = None, keep_until: int = 0,
    ) -> Redemption:
        c = codes.c
        # Whoever deletes the row redeems it; a concurrent redemption waits on its lock and finds none.
        spend = delete(codes).where(c.tenant == tenant, c.code_hash == code_hash, c.grant_id == access.grant_id,
                                    c.expires_at > now)
        keep = update(clients).where(clients.c.tenant == tenant, clients.c.client_id == access.client_id)

        def op(conn: Connection) -> Redemption:
            if conn.execute(spend).rowcount != 1:
                return Redemption.SPENT
            if not conn.execute(select(_live_grant(tenant, access.grant_id))).scalar():
                return Redemption.REVOKED
            self._upsert(conn, access_tokens, _row(access))
            if refresh is not None:
                self._upsert(conn, refresh_tokens, _row(refresh))
            self._used(conn, tenant, access.grant_id, access.issued_at)
            if keep_client:
                conn.execute(keep.values(expires_at=None))
            if event is not None:
                conn.execute(audit_events.insert().values(_audit_row(event, keep_until)))
            return Redemption.ISSUED

        return self._write(op)

    def revoke_grant_of_code(self, tenant: str, code_hash: str) -> bool:
        def op(conn: Connection) -> bool:
            grant_id = conn.execute(select(grants.c.grant_id).where(
                grants.c.tenant == tenant, grants.c.code_hash == code_hash)).scalar()
            return grant_id is not None and self._revoke(conn, tenant, grant_id)

        return self._write(op)

    def revoke_grant(self, tenant: str, grant_id: str) -> None:
        self._write(lambda c: self._revoke(c, tenant, grant_id))

    def _revoke(self, conn: Connection, tenant: str, grant_id: str) -> bool:
        """Revoke a live grant, and record it; whether it was live."""
        stmt = update(grants).where(
            grants.c.tenant == tenant, grants.c.grant_id == grant_id, grants.c.revoked.is_(False)
        ).values(revoked=True)
        if conn.execute(stmt).rowcount != 1:
            return False
        self._record(conn, tenant, Revocation.GRANT, grant_id)
        return True

    def _record(self, conn: Connection, tenant: str, kind: str, revoked: str) -> None:
        now = int(time.time())
        self._upsert(conn, revocations, {"tenant": tenant, "kind": kind, "revoked": revoked, "revoked_at": now,
                                         "expires_at": now + REVOCATION_RECORD})
        self._announce(conn, REVOCATION)

    def _announce(self, conn: Connection, topic: str) -> None:
        if self._listener is not None:
            notify(conn, topic)

    def revocations_since(self, since: int) -> list[Revocation]:
        stmt = select(revocations.c.tenant, revocations.c.kind, revocations.c.revoked, revocations.c.revoked_at
                      ).where(revocations.c.revoked_at >= since)
        return [Revocation(*row) for row in self._read(lambda c: c.execute(stmt).all())]

    # -- our tokens -----------------------------------------------------------------------
    # A token's grant is checked on every read, so a token stored while its
    # grant is being revoked by another transaction is hidden all the same.
    def _get_token(self, table: Table, cls: type[T], tenant: str, token_hash: str) -> T | None:
        stmt = _TOKEN_BY_HASH[table.name]
        row = self._read(lambda c: c.execute(stmt, {"tenant": tenant, "token_hash": token_hash}).mappings().first())
        return None if row is None else _record(cls, row)

    def get_access_token(self, tenant: str, token_hash: str) -> AccessToken | None:
        return self._get_token(access_tokens, AccessToken, tenant, token_hash)

    def get_refresh_token(self, tenant: str, token_hash: str) -> RefreshToken | None:
        return self._get_token(refresh_tokens, RefreshToken, tenant, token_hash)

    def rotate_refresh_token(
        self, tenant: str, token_hash: str, now: int, grace: int, access: AccessToken, refresh: RefreshToken,
        event: AuditEvent | None = None, keep_until: int = 0,
    ) -> Rotation:
        old = refresh_tokens.c
        mine = (old.tenant == tenant, old.token_hash == token_hash, old.expires_at > now)
        # The row lock makes concurrent rotations of one token queue here.
        presented = select(old.rotated_at, old.successor_hash, old.grant_id).where(
            *mine, _live_grant(tenant, old.grant_id)).with_for_update()

        def replace_successor(conn: Connection, successor_hash: str | None) -> bool:
            # Only an unused successor: one already rotated means the family moved on.
            unused = update(refresh_tokens).where(
                old.tenant == tenant, old.token_hash == successor_hash, old.rotated_at.is_(None)
            ).values(rotated_at=REPLACED)
            return successor_hash is not None and conn.execute(unused).rowcount == 1

        def op(conn: Connection) -> Rotation:
            row = conn.execute(presented).first()
            if row is None:
                return Rotation.GONE
            if row.rotated_at is not None and not (
                    row.rotated_at >= now - grace and replace_successor(conn, row.successor_hash)):
                # A replay, RFC 9700 §4.14.2: the family is revoked.
                return Rotation.REUSED if self._revoke(conn, tenant, row.grant_id) else Rotation.GONE
            conn.execute(update(refresh_tokens).where(old.tenant == tenant, old.token_hash == token_hash).values(
                rotated_at=func.coalesce(old.rotated_at, now), successor_hash=refresh.token_hash))
            self._upsert(conn, access_tokens, _row(access))
            self._upsert(conn, refresh_tokens, _row(refresh))
            self._used(conn, tenant, row.grant_id, access.issued_at)
            if event is not None:
                conn.execute(audit_events.insert().values(_audit_row(event, keep_until)))
            return Rotation.ROTATED

        return self._write(op)

    @staticmethod
    def _used(conn: Connection, tenant: str, grant_id: str, at: int) -> None:
        conn.execute(update(grants).where(grants.c.tenant == tenant, grants.c.grant_id == grant_id)
                     .values(last_used_at=at))

    def revoke_access_token(self, tenant: str, token_hash: str) -> None:
        stmt = delete(access_tokens).where(access_tokens.c.tenant == tenant, access_tokens.c.token_hash == token_hash)

        def op(conn: Connection) -> None:
            conn.execute(stmt)
            self._record(conn, tenant, Revocation.TOKEN, token_hash)

        self._write(op)

    # -- upstream tokens ----------------------------------------------------------------
    def get_grant(self, tenant: str, grant_id: str) -> Grant | None:
        stmt = select(grants).where(grants.c.tenant == tenant, grants.c.grant_id == grant_id,
                                    grants.c.revoked.is_(False))
        row = self._read(lambda c: c.execute(stmt).mappings().first())
        if row is None:
            return None
        if row["upstream"] is None:  # made without a browser: no upstream tokens
            return _record(Grant, row)
        tokens = open_upstream(self.keyring, tenant, grant_id, row["upstream"])
        return _record(Grant, row, upstream=_convert.unstructure(tokens))

    def _grant_at(self, tenant: str, grant_id: str, version: int) -> Any:
        return (grants.c.tenant == tenant, grants.c.grant_id == grant_id, grants.c.upstream_version == version)

    def claim_upstream_refresh(self, tenant: str, grant_id: str, version: int, now: int, lease_until: int) -> bool:
        lease = grants.c.refresh_lease_until
        stmt = update(grants).where(
            *self._grant_at(tenant, grant_id, version), grants.c.revoked.is_(False), lease.is_(None) | (lease <= now)
        ).values(refresh_lease_until=lease_until)
        return self._write(lambda c: c.execute(stmt).rowcount == 1)

    def release_upstream_refresh(self, tenant: str, grant_id: str, version: int) -> None:
        stmt = update(grants).where(*self._grant_at(tenant, grant_id, version)).values(refresh_lease_until=None)
        self._write(lambda c: c.execute(stmt))

    def update_upstream_tokens(self, tenant: str, grant_id: str, version: int, tokens: UpstreamTokens) -> bool:
        sealed = seal_upstream(self.keyring, tenant, grant_id, tokens)
        stmt = update(grants).where(*self._grant_at(tenant, grant_id, version), grants.c.revoked.is_(False)).values(
            upstream=sealed, upstream_version=version + 1, refresh_lease_until=None
        )
        return self._write(lambda c: c.execute(stmt).rowcount == 1)

    # -- housekeeping -----------------------------------------------------------------------
    def delete_expired(self, now: int, limit: int = 1000) -> int:
        """Each table in its own short transaction, so requests wait little."""
        removed = 0
        for table in EXPIRING:
            key = tuple_(*table.primary_key.columns)
            batch = select(*table.primary_key.columns).where(table.c.expires_at <= now).limit(limit)

            def op(conn: Connection, table: Table = table, key: Any = key, batch: Any = batch) -> int:
                keys = [tuple(r) for r in conn.execute(batch)]
                if not keys:
                    return 0
                # Expiry is checked again: only what is still expired goes.
                return conn.execute(delete(table).where(key.in_(keys), table.c.expires_at <= now)).rowcount

            removed += self._write(op)
        return removed

    # -- the directory ---------------------------------------------------------------------
    # Each change first moves the directory's version: the row lock that
    # takes (PostgreSQL, MariaDB; SQLite's writers take turns anyway) makes
    # changes to the directory queue, so each one's checks read what the
    # change before it left. A constraint a change trips all the same is
    # refused as changed meanwhile.
    def _change(self, op: Callable[[Connection], R]) -> R:
        def changing(conn: Connection) -> R:
            self._upsert(conn, directory_version, {"id": 1, "version": 1}, version=directory_version.c.version + 1)
            self._announce(conn, DIRECTORY)
            return op(conn)

        return self._refusing(changing)

    def _refusing(self, op: Callable[[Connection], R]) -> R:
        """Write, refusing as changed meanwhile what trips a constraint its
        own checks did not see coming (another transaction got there first)."""
        try:
            return self._write(op)
        except exc.IntegrityError:
            raise DirectoryRefused("the directory changed meanwhile in a way that refuses this; look again") from None

    def create_organization(self, organization: Organization) -> None:
        def op(conn: Connection) -> None:
            if conn.execute(select(organizations.c.name).where(organizations.c.name == organization.name)).first():
                raise rules.org_exists(organization.name)
            conn.execute(organizations.insert().values(_row(organization)))

        self._change(op)

    def get_organization(self, name: str) -> Organization | None:
        row = self._read(lambda c: c.execute(select(organizations).where(
            organizations.c.name == name)).mappings().first())
        return None if row is None else _record(Organization, row)

    def list_organizations(self) -> list[Organization]:
        rows = self._read(lambda c: c.execute(select(organizations).order_by(organizations.c.name)).mappings().all())
        return [_record(Organization, r) for r in rows]

    def update_organization(self, organization: Organization) -> None:
        stmt = update(organizations).where(organizations.c.name == organization.name).values(
            display_name=organization.display_name, created_at=organization.created_at)

        def op(conn: Connection) -> None:
            if conn.execute(stmt).rowcount != 1:
                raise rules.no_org(organization.name)

        self._change(op)

    def delete_organization(self, name: str) -> None:
        def op(conn: Connection) -> None:
            if not conn.execute(select(organizations.c.name).where(organizations.c.name == name)).first():
                raise rules.no_org(name)
            configs = conn.execute(
                select(oauth_configs.c.name).where(oauth_configs.c.organization == name)).scalars().all()
            used = conn.execute(select(servers.c.slug).where(servers.c.organization == name)).scalars().all()
            if configs or used:
                raise rules.org_in_use(name, configs, used)
            conn.execute(delete(admin_tokens).where(admin_tokens.c.organization == name))
            conn.execute(delete(organizations).where(organizations.c.name == name))

        self._change(op)

    def _openable(self, rows: Sequence[Mapping[Any, Any]]) -> Iterator[OAuthConfig]:
        """The configurations whose secrets open: one sealed with a key the
        ring lacks must not keep every other server from being served (its
        own servers are not: tenants_db.DatabaseTenants says so)."""
        for row in rows:
            try:
                yield self._opened(row)
            except DecryptionFailed as failed:
                log.warning("OAuth configuration %s/%s: its client secret does not open (%s); its servers are "
                            "not served until the key is back or the secret is set again", row["organization"],
                            row["name"], failed)

    def _opened(self, row: Mapping[Any, Any]) -> OAuthConfig:
        secret = open_client_secret(self.keyring, row["organization"], row["name"], row["client_secret"])
        return _record(OAuthConfig, row, client_secret=secret)

    def _config_row(self, config: OAuthConfig) -> dict[str, Any]:
        sealed = seal_client_secret(self.keyring, config.organization, config.name, config.client_secret)
        return _row(config, client_secret=sealed)

    @staticmethod
    def _config_key(organization: str, name: str) -> tuple[Any, ...]:
        return (oauth_configs.c.organization == organization, oauth_configs.c.name == name)

    def create_oauth_config(self, oauth_config: OAuthConfig) -> None:
        row = self._config_row(oauth_config)
        org, name = oauth_config.organization, oauth_config.name

        def op(conn: Connection) -> None:
            if not conn.execute(select(organizations.c.name).where(organizations.c.name == org)).first():
                raise rules.no_org(org)
            if conn.execute(select(oauth_configs.c.name).where(*self._config_key(org, name))).first():
                raise rules.config_exists(org, name)
            conn.execute(oauth_configs.insert().values(row))

        self._change(op)

    def get_oauth_config(self, organization: str, name: str) -> OAuthConfig | None:
        row = self._read(lambda c: c.execute(select(oauth_configs).where(
            *self._config_key(organization, name))).mappings().first())
        return None if row is None else self._opened(row)

    def list_oauth_configs(self, organization: str | None = None) -> list[OAuthConfig]:
        stmt = select(oauth_configs).order_by(oauth_configs.c.organization, oauth_configs.c.name)
        if organization is not None:
            stmt = stmt.where(oauth_configs.c.organization == organization)
        return [self._opened(r) for r in self._read(lambda c: c.execute(stmt).mappings().all())]

    def update_oauth_config(self, oauth_config: OAuthConfig) -> None:
        row = self._config_row(oauth_config)
        org, name = oauth_config.organization, oauth_config.name
        stmt = update(oauth_configs).where(*self._config_key(org, name)).values(
            {k: v for k, v in row.items() if k not in ("organization", "name")})

        def op(conn: Connection) -> None:
            if conn.execute(stmt).rowcount != 1:
                raise rules.no_config(org, name)

        self._change(op)

    def delete_oauth_config(self, organization: str, name: str) -> None:
        def op(conn: Connection) -> None:
            if not conn.execute(select(oauth_configs.c.name).where(*self._config_key(organization, name))).first():
                raise rules.no_config(organization, name)
            users = conn.execute(select(servers.c.slug).where(
                servers.c.organization == organization, servers.c.oauth_config == name)).scalars().all()
            if users:
                raise rules.config_in_use(organization, name, users)
            conn.execute(delete(oauth_configs).where(*self._config_key(organization, name)))

        self._change(op)

    def _check_server(self, conn: Connection, server: Server) -> None:
        if not conn.execute(select(organizations.c.name).where(organizations.c.name == server.organization)).first():
            raise rules.no_org(server.organization)
        if not conn.execute(select(oauth_configs.c.name).where(
                *self._config_key(server.organization, server.oauth_config))).first():
            raise rules.no_config(server.organization, server.oauth_config)

    def _check_place(self, conn: Connection, server: Server) -> None:
        rows = conn.execute(select(servers).where(
            (servers.c.issuer == server.issuer) | (servers.c.resource == server.resource)
        ).order_by(servers.c.slug)).mappings().all()
        refused = rules.place_taken(server, [_record(Server, r) for r in rows])
        if refused is not None:
            raise refused

    def create_server(self, server: Server) -> None:
        def op(conn: Connection) -> None:
            self._check_server(conn, server)
            if conn.execute(select(servers.c.slug).where(servers.c.slug == server.slug)).first():
                raise rules.server_exists(server.slug)
            self._check_place(conn, server)
            conn.execute(servers.insert().values(_row(server)))

        self._change(op)

    def get_server(self, slug: str) -> Server | None:
        row = self._read(lambda c: c.execute(select(servers).where(servers.c.slug == slug)).mappings().first())
        return None if row is None else _record(Server, row)

    def list_servers(self, organization: str | None = None) -> list[Server]:
        stmt = select(servers).order_by(servers.c.slug)
        if organization is not None:
            stmt = stmt.where(servers.c.organization == organization)
        return [_record(Server, r) for r in self._read(lambda c: c.execute(stmt).mappings().all())]

    def _revoke_all(self, conn: Connection, tenant: str, *where: Any) -> int:
        """Revoke (and record) every live grant of the tenant (those meeting
        ``where`` only, if given); how many."""
        live = conn.execute(select(grants.c.grant_id).where(
            grants.c.tenant == tenant, grants.c.revoked.is_(False), *where).with_for_update()).scalars().all()
        return sum(self._revoke(conn, tenant, grant_id) for grant_id in live)

    def update_server(self, server: Server) -> int:
        row = _row(server)

        def op(conn: Connection) -> int:
            old = conn.execute(select(servers.c.organization, servers.c.oauth_config).where(
                servers.c.slug == server.slug)).first()
            if old is None:
                raise rules.no_server(server.slug)
            if old.organization != server.organization:
                raise rules.moved(server.slug)
            self._check_server(conn, server)
            self._check_place(conn, server)
            revoked = self._revoke_all(conn, server.slug) if old.oauth_config != server.oauth_config else 0
            conn.execute(update(servers).where(servers.c.slug == server.slug).values(
                {k: v for k, v in row.items() if k != "slug"}))
            return revoked

        return self._change(op)

    def delete_server(self, slug: str) -> int:
        def op(conn: Connection) -> int:
            if not conn.execute(select(servers.c.slug).where(servers.c.slug == slug)).first():
                raise rules.no_server(slug)
            revoked = self._revoke_all(conn, slug)
            conn.execute(delete(servers).where(servers.c.slug == slug))
            # A server made later with this slug inherits no registration either.
            conn.execute(delete(clients).where(clients.c.tenant == slug))
            return revoked

        return self._change(op)

    def directory_version(self) -> int:
        stmt = select(directory_version.c.version).where(directory_version.c.id == 1)
        return int(self._read(lambda c: c.execute(stmt).scalar()) or 0)

    def load_directory(self) -> DirectoryState:
        def op(conn: Connection) -> DirectoryState:
            # The version first: the records read after it are as new or newer.
            version = conn.execute(select(directory_version.c.version).where(directory_version.c.id == 1)).scalar()
            rows = conn.execute(select(servers).order_by(servers.c.slug)).mappings().all()
            used = select(servers.c.organization, servers.c.oauth_config).distinct()
            configs = conn.execute(select(oauth_configs).where(
                tuple_(oauth_configs.c.organization, oauth_configs.c.name).in_(used)
            ).order_by(oauth_configs.c.organization, oauth_configs.c.name)).mappings().all()
            return DirectoryState(int(version or 0), tuple(_record(Server, r) for r in rows),
                                  tuple(self._openable(configs)))

        return self._read(op)

    # -- administration -------------------------------------------------------------------
    def create_admin_token(self, token: AdminToken) -> None:
        org = token.organization
        taken = select(admin_tokens.c.token_id).where(
            (admin_tokens.c.token_id == token.token_id) | (admin_tokens.c.token_hash == token.token_hash))

        def op(conn: Connection) -> None:
            if org is not None and not conn.execute(select(organizations.c.name).where(
                    organizations.c.name == org)).first():
                raise rules.no_org(org)
            if conn.execute(taken).first():
                raise rules.admin_token_exists(token.token_id)
            conn.execute(admin_tokens.insert().values(_row(token)))

        self._refusing(op)

    def get_admin_token(self, token_hash: str) -> AdminToken | None:
        row = self._read(lambda c: c.execute(select(admin_tokens).where(
            admin_tokens.c.token_hash == token_hash)).mappings().first())
        return None if row is None else _record(AdminToken, row)

    def list_admin_tokens(self) -> list[AdminToken]:
        stmt = select(admin_tokens).order_by(admin_tokens.c.created_at, admin_tokens.c.token_id)
        return [_record(AdminToken, r) for r in self._read(lambda c: c.execute(stmt).mappings().all())]

    def delete_admin_token(self, token_id: str) -> bool:
        stmt = delete(admin_tokens).where(admin_tokens.c.token_id == token_id)
        return self._write(lambda c: c.execute(stmt).rowcount == 1)

    def record_audit(self, event: AuditEvent, keep_until: int) -> None:
        row = _audit_row(event, keep_until)
        self._write(lambda c: c.execute(audit_events.insert().values(row)))

    def list_audit_events(self, limit: int, before: int | None = None, organization: str | None = None,
                          tenant: str | None = None, user_id: str | None = None, client_id: str | None = None,
                          event: str | None = None, since: int | None = None,
                          until: int | None = None) -> list[AuditEvent]:
        a = audit_events.c
        stmt = select(*_AUDIT_EVENT).order_by(a.event_id.desc()).limit(limit)
        for column, value in ((a.tenant, tenant), (a.user_id, user_id), (a.client_id, client_id), (a.event, event)):
            if value is not None:
                stmt = stmt.where(column == value)
        if before is not None:
            stmt = stmt.where(a.event_id < before)
        if organization is not None:
            stmt = stmt.where(a.organization == organization)
        if since is not None:
            stmt = stmt.where(a.at >= since)
        if until is not None:
            stmt = stmt.where(a.at < until)
        return [_record(AuditEvent, r) for r in self._read(lambda c: c.execute(stmt).mappings().all())]

    def list_clients(self, tenant: str, limit: int, after: str | None = None) -> list[Client]:
        stmt = select(clients).where(clients.c.tenant == tenant).order_by(clients.c.client_id).limit(limit)
        if after is not None:
            stmt = stmt.where(clients.c.client_id > after)
        return [_record(Client, r) for r in self._read(lambda c: c.execute(stmt).mappings().all())]

    def clients_last_used(self, tenant: str, client_ids: tuple[str, ...]) -> dict[str, int]:
        if not client_ids:
            return {}
        g = grants.c
        stmt = select(g.client_id, func.max(g.last_used_at)).where(
            g.tenant == tenant, g.client_id.in_(client_ids), g.last_used_at.is_not(None)).group_by(g.client_id)
        return {client_id: int(at) for client_id, at in self._read(lambda c: c.execute(stmt).all())}

    def delete_client(self, tenant: str, client_id: str) -> int | None:
        stmt = delete(clients).where(clients.c.tenant == tenant, clients.c.client_id == client_id)

        def op(conn: Connection) -> int | None:
            if conn.execute(stmt).rowcount != 1:
                return None
            return self._revoke_all(conn, tenant, grants.c.client_id == client_id)

        return self._write(op)

    def list_grants(self, now: int, limit: int, after: tuple[str, str] | None = None,
                    organization: str | None = None, tenant: str | None = None, user_id: str | None = None,
                    client_id: str | None = None) -> list[GrantInfo]:
        g = grants.c
        stmt = select(*_GRANT_INFO).where(_live_at(now)).order_by(g.tenant, g.grant_id).limit(limit)
        for column, value in ((g.tenant, tenant), (g.user_id, user_id), (g.client_id, client_id)):
            if value is not None:
                stmt = stmt.where(column == value)
        if after is not None:
            after_tenant, after_grant = after
            stmt = stmt.where((g.tenant > after_tenant) | ((g.tenant == after_tenant) & (g.grant_id > after_grant)))
        if organization is not None:
            stmt = stmt.where(_of_organization(g.tenant, organization))
        return [_record(GrantInfo, r) for r in self._read(lambda c: c.execute(stmt).mappings().all())]

    def get_grant_info(self, tenant: str, grant_id: str, now: int) -> GrantInfo | None:
        stmt = select(*_GRANT_INFO).where(grants.c.tenant == tenant, grants.c.grant_id == grant_id, _live_at(now))
        row = self._read(lambda c: c.execute(stmt).mappings().first())
        return None if row is None else _record(GrantInfo, row)
