"""A database that stops answering (its packets swallowed, not refused):
every request that needs it gets a 503 with Retry-After within
``database_timeout``, the log says so, endpoints that need no database keep
answering, and once the database answers again so does the server, without
a restart. Through a real ``serve`` process whose database is reached
through a relay the test pauses (relay.py), in front of the real
PostgreSQL and MariaDB on 127.0.0.1."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from databases import isolated_database
from processes import wait_until
from relay import Relay
from served import LOOPS, Served, serve
from sqlalchemy import make_url

TIMEOUT = 2  # database_timeout, seconds (psycopg connects in 2 at the least)
MARGIN = 2.0
RECOVERY = 20.0


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgresql),
                        pytest.param("mariadb", marks=pytest.mark.mariadb)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from isolated_database(request.param, tmp_path)


def token_request(http: httpx.Client) -> httpx.Response:
    # Counted against the rate limit (in the database), then the code looked up there.
    return http.post("/oauth/token", data={"grant_type": "authorization_code", "code": "unknown", "client_id": "c",
                                           "redirect_uri": "http://127.0.0.1/cb", "code_verifier": "v" * 43})


@contextlib.contextmanager
def served_through_a_relay(database: str, loop: str, tmp_path: Path) -> Iterator[tuple[Relay, Served, httpx.Client]]:
    """``serve`` reaching ``database`` through a relay the test can pause, with no token cache."""
    url = make_url(database)
    with Relay((url.host or "127.0.0.1", url.port or {"postgresql": 5432}.get(url.get_backend_name(), 3306))) as relay:
        through_relay = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
        with serve(tmp_path, loop, database=through_relay,
                   server=f"database_timeout = {TIMEOUT}\ntoken_cache_seconds = 0") as served, \
                httpx.Client(base_url=served.base, timeout=30, trust_env=False) as http:
            yield relay, served, http


def guarded_request(http: httpx.Client) -> httpx.Response:
    # A token of ours in shape: the guard must look it up (no token cache here).
    return http.post("/mcp", json={}, headers={"authorization": "Bearer mcp_at_" + "A" * 43})


@pytest.mark.parametrize("loop", LOOPS)
def test_a_database_that_swallows_packets_gets_a_timely_503_and_recovers(database: str, loop: str,
                                                                         tmp_path: Path) -> None:
    with served_through_a_relay(database, loop, tmp_path) as (relay, served, http):
        assert token_request(http).status_code in (400, 401)
        assert guarded_request(http).status_code == 401

        relay.pause()
        for send in (token_request, guarded_request):
            started = time.monotonic()
            refused = send(http)
            took = time.monotonic() - started
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "temporarily_unavailable"
            assert int(refused.headers["retry-after"]) > 0
            assert took < TIMEOUT + MARGIN, took
        assert http.get("/.well-known/oauth-authorization-server").status_code == 200
        wait_until(lambda: "the database is unavailable" in served.log_text(), 5.0, "the log line")

        relay.resume()
        wait_until(lambda: token_request(http).status_code in (400, 401), RECOVERY, "recovery", served.proc,
                   served.log)
        wait_until(lambda: guarded_request(http).status_code == 401, RECOVERY, "recovery", served.proc,
                   served.log)


@pytest.mark.mariadb
def test_a_mariadb_that_swallows_packets_fails_a_store_call_in_time_and_recovers(tmp_path: Path) -> None:
    """The store by itself (as WSGI and the command line use it, with no
    deadline of the caller's): the driver's own read timeout ends the wait."""
    from mcp_oauth_proxy.core.errors import StorageUnavailable
    from mcp_oauth_proxy.storage.crypto import KeyRing
    from mcp_oauth_proxy.storage.open import open_store

    for database in isolated_database("mariadb", tmp_path):
        url = make_url(database)
        with Relay((url.host or "127.0.0.1", url.port or 3306)) as relay:
            store = open_store(url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False),
                               KeyRing.generate(), timeout=TIMEOUT)
            assert store.get_client("acme", "c") is None
            relay.pause()
            outcome: list[object] = []
            started = time.monotonic()
            call = threading.Thread(target=lambda: outcome.append(_attempt(store)), daemon=True)
            call.start()
            call.join(TIMEOUT + MARGIN)
            assert outcome and isinstance(outcome[0], StorageUnavailable), outcome or "still waiting"
            assert time.monotonic() - started < TIMEOUT + MARGIN
            relay.resume()
            wait_until(lambda: _attempt(store) is None, RECOVERY, "recovery")
            store.engine.dispose()


def _attempt(store: object) -> object:
    from mcp_oauth_proxy.core.errors import StorageUnavailable

    try:
        return store.get_client("acme", "c")  # type: ignore[attr-defined]
    except StorageUnavailable as error:
        return error


@pytest.mark.parametrize("loop", LOOPS)
def test_the_server_stops_on_sigterm_while_the_database_swallows_packets(database: str, loop: str,
                                                                        tmp_path: Path) -> None:
    with served_through_a_relay(database, loop, tmp_path) as (relay, served, http):
        assert token_request(http).status_code in (400, 401)  # a pooled connection, through the relay
        relay.pause()
        assert token_request(http).status_code == 503  # a store call left waiting on the database
        served.proc.terminate()
        # The server stops, and the process ends with the call still waiting
        # (the relay is paused until after it has exited).
        served.proc.wait(timeout=TIMEOUT + 10)
        assert served.proc.returncode == 0, served.log_text()[-2000:]
