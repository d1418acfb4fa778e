"""Storage benchmark: guard lookups/s and refresh rotations/s on SQLite and
PostgreSQL, and guard lookup latency with few vs many stored tokens.

    python bench/bench_storage.py [--big 1000000] [--postgresql URL] [--skip-postgresql]

PostgreSQL runs in a schema of its own, dropped afterwards. One thread, one
connection: the figures are per server process.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import sqlalchemy

from mcp_oauth_proxy.core.models import AccessToken, CodeGrant, Grant, RefreshToken, UpstreamTokens
from mcp_oauth_proxy.storage.crypto import KeyRing
from mcp_oauth_proxy.storage.open import open_store
from mcp_oauth_proxy.storage.sql import SqlStore, make_engine

T0 = 1_800_000_000
TENANT, GRANT = "acme", "bench-grant"
FIELDS = dict(grant_id=GRANT, client_id="bench-client", user_id="user-1", scope=("mcp",),
              resource="https://acme.example.com/mcp")


def token_hash(i: int) -> str:
    return hashlib.sha256(f"token-{i}".encode()).hexdigest()


def setup_grant(store: SqlStore) -> None:
    grant = Grant(tenant=TENANT, grant_id=GRANT, client_id="bench-client", user_id="user-1", scope=("mcp",),
                  resource=FIELDS["resource"], code_hash="bench-code", claims={}, upstream=UpstreamTokens("at"),
                  created_at=T0, expires_at=T0 + 10**6)
    code = CodeGrant(tenant=TENANT, code_hash="bench-code", grant_id=GRANT, client_id="bench-client",
                     user_id="user-1", redirect_uri="http://127.0.0.1/cb", redirect_uri_given=False,
                     code_challenge="c" * 43, scope=("mcp",), resource=FIELDS["resource"], expires_at=T0 + 60)
    store.save_grant_and_code(grant, code)


def fill(store: SqlStore, start: int, stop: int) -> None:
    """Access tokens start..stop-1, in bulk: COPY on PostgreSQL, executemany elsewhere."""
    columns = ["tenant", "token_hash", "grant_id", "client_id", "user_id", "scope", "resource", "issued_at",
               "expires_at"]

    def rows(lo: int, hi: int) -> Iterator[tuple[Any, ...]]:
        for i in range(lo, hi):
            yield (TENANT, token_hash(i), GRANT, "bench-client", "user-1", '["mcp"]', FIELDS["resource"], T0,
                   T0 + 3600)

    # sqlite_write: one BEGIN IMMEDIATE transaction (see storage/sql.py), not a commit per row.
    with store.engine.execution_options(sqlite_write=True).begin() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        if store.engine.dialect.name == "postgresql":
            with cursor.copy(f"COPY access_tokens ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows(start, stop):
                    copy.write_row(row)
        else:
            marks = ", ".join("?" * len(columns))
            cursor.executemany(f"INSERT INTO access_tokens ({', '.join(columns)}) VALUES ({marks})", rows(start, stop))
    if store.engine.dialect.name == "postgresql":
        with store.engine.begin() as conn:
            conn.execute(sqlalchemy.text("ANALYZE access_tokens"))


def per_second(n: int, run: Callable[[int], Any]) -> float:
    started = time.perf_counter()
    for i in range(n):
        run(i)
    return n / (time.perf_counter() - started)


def latencies(store: SqlStore, stored: int, n: int) -> tuple[float, float]:
    """p50 and p99 in microseconds of looking up random stored tokens."""
    rng = random.Random(1)
    sample = [token_hash(rng.randrange(stored)) for _ in range(n)]
    times = []
    for h in sample:
        started = time.perf_counter()
        found = store.get_access_token(TENANT, h)
        times.append(time.perf_counter() - started)
        assert found is not None
    cuts = statistics.quantiles(times, n=100)
    return cuts[49] * 1e6, cuts[98] * 1e6


def rotations(store: SqlStore, n: int) -> float:
    first = RefreshToken(tenant=TENANT, token_hash="rt-0", issued_at=T0, expires_at=T0 + 10**6, **FIELDS)
    store.redeem_code(TENANT, "bench-code", T0, AccessToken(tenant=TENANT, token_hash="at-r0", issued_at=T0,
                                                            expires_at=T0 + 3600, **FIELDS), first, False)

    def rotate(i: int) -> None:
        outcome = store.rotate_refresh_token(
            TENANT, f"rt-{i}", T0, 0,
            AccessToken(tenant=TENANT, token_hash=f"at-r{i + 1}", issued_at=T0, expires_at=T0 + 3600, **FIELDS),
            RefreshToken(tenant=TENANT, token_hash=f"rt-{i + 1}", issued_at=T0, expires_at=T0 + 10**6, **FIELDS))
        assert outcome.value == "rotated"

    return per_second(n, rotate)


def run(name: str, url: str, args: argparse.Namespace) -> None:
    # A bulk load is one long statement (COPY of a million rows): past the
    # store's default bound on a statement (database_timeout).
    store = open_store(url, KeyRing.generate(), timeout=600)
    assert isinstance(store, SqlStore)
    setup_grant(store)
    fill(store, 0, args.small)
    print(f"{name}: guard lookups       {per_second(args.lookups, lambda i: store.get_access_token(TENANT, token_hash(i % args.small))):8.0f} /s")
    print(f"{name}: refresh rotations   {rotations(store, args.rotations):8.0f} /s")
    p50, p99 = latencies(store, args.small, args.lookups)
    print(f"{name}: guard latency at {args.small:>9,} tokens  p50 {p50:7.0f} us  p99 {p99:7.0f} us")
    started = time.perf_counter()
    fill(store, args.small, args.big)
    print(f"{name}: (bulk-loaded {args.big - args.small:,} tokens in {time.perf_counter() - started:.0f} s)")
    p50, p99 = latencies(store, args.big, args.lookups)
    print(f"{name}: guard latency at {args.big:>9,} tokens  p50 {p50:7.0f} us  p99 {p99:7.0f} us")
    store.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--big", type=lambda s: int(float(s)), default=1_000_000)
    parser.add_argument("--lookups", type=int, default=5_000)
    parser.add_argument("--rotations", type=int, default=1_000)
    parser.add_argument("--postgresql", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--skip-postgresql", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run("sqlite    ", f"sqlite:///{Path(tmp) / 'bench.db'}", args)
    if args.skip_postgresql:
        return
    schema = f"bench_{secrets.token_hex(4)}"
    admin = make_engine(args.postgresql)
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    try:
        sep = "&" if "?" in args.postgresql else "?"
        run("postgresql", f"{args.postgresql}{sep}options=-csearch_path%3D{schema}", args)
    finally:
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


if __name__ == "__main__":
    main()
