"""Answers sent without reading the request body (the guard's 401, an
unknown host's 404, the forwarder's 405 and 404),
behind which a client sent many small chunks in one write: the connection
still answers its next request (or is closed), and no connection outlives
its client; on asyncio and on trio, through a real ``serve`` process."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import attrs
import pytest
from processes import free_port
from served import LOOPS, Served, chunked, closed_within, read_answer, request, seed_access_token, serve, settled

# More chunks than the server's queue of request messages for the app holds
# (Hypercorn: max_app_queue_size, 10).
CHUNKS = 12
REQUESTS = 200
LINGER = 1.0  # adapters/bodies.py: how long an unread body's rest is waited for
# Long, so that a connection closed only when its keep-alive timer runs out
# (rather than when its client leaves) is seen as one outliving its client.
KEEP_ALIVE = 30
SOON = 5.0


@attrs.frozen
class Server:
    served: Served
    tokens: dict[str, str]


@pytest.fixture(scope="module", params=LOOPS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp: Path = tmp_path_factory.mktemp(f"stalls-{request.param}")
    port = free_port()
    database = f"sqlite:///{tmp / 'proxy.db'}"
    tokens = {slug: seed_access_token(database, tmp / "keys", slug, f"http://{host}:{port}/mcp")
              for slug, host in (("acme", "127.0.0.1"), ("bare", "localhost"))}
    # "bare" has no backend: the forwarder answers its authorized requests 404.
    bare = (f'[[tenants]]\nslug = "bare"\nissuer = "http://localhost:{port}"\n'
            f'resource = "http://localhost:{port}/mcp"\n'
            '[tenants.upstream]\nkind = "github"\nclient_id = "cid"\nclient_secret = "secret"\n')
    with serve(tmp, request.param, port=port, database=database, server=f"keep_alive_timeout = {KEEP_ALIVE}",
               tenant='backend = "http://127.0.0.1:9/mcp"', more=bare) as served:
        yield Server(served, tokens)


def hostile(name: str, server: Server) -> tuple[bytes, int]:
    """The request (sent in one write) and the status it is answered with."""
    host = server.served.host
    body = chunked(CHUNKS, 100)
    bearer = {slug: (("authorization", f"Bearer {token}"),) for slug, token in server.tokens.items()}
    return {
        "guard_401": (request("POST", "/mcp", host, body=body), 401),
        "unknown_host_404": (request("POST", "/oauth/token", b"elsewhere.test", body=body), 404),
        "forwarder_405": (request("PUT", "/mcp", host, bearer["acme"], body), 405),
        "forwarder_404": (request("POST", "/mcp", host.replace(b"127.0.0.1", b"localhost"), bearer["bare"], body),
                          404),
    }[name]


ANSWERS = ["guard_401", "unknown_host_404", "forwarder_405", "forwarder_404"]


@pytest.mark.parametrize("answer", ANSWERS)
def test_an_unread_chunked_body_does_not_stall_the_connection(server: Server, answer: str) -> None:
    data, status = hostile(answer, server)
    with server.served.connect() as sock:
        sock.sendall(data)
        first = read_answer(sock)
        assert first is not None and first.status == status, first
        sock.sendall(request("GET", "/.well-known/oauth-authorization-server", server.served.host))
        # Answered on the same connection, or the connection closed: never left hanging.
        second = read_answer(sock)
        assert second is None or second.status == 200, second


@pytest.mark.parametrize("answer", ANSWERS)
def test_unread_chunked_bodies_do_not_leak_sockets(server: Server, answer: str) -> None:
    data, status = hostile(answer, server)
    served = server.served

    def one() -> None:
        with served.connect() as sock:
            sock.sendall(data)
            got = read_answer(sock)
            assert got is not None and got.status == status, got

    for _ in range(3):  # what the first requests open for good (a pooled database connection)
        one()
    baseline = settled(served.fds)  # connections still closing are not part of it
    for _ in range(REQUESTS):
        one()
    assert settled(served.fds, baseline, SOON) <= baseline


def test_an_unread_body_that_goes_on_gets_its_answer_and_the_connection_closes(server: Server) -> None:
    served = server.served
    unfinished = request("POST", "/mcp", served.host, body=chunked(CHUNKS, 100))[:-len(b"0\r\n\r\n")]
    baseline = settled(served.fds)
    sockets = [served.connect() for _ in range(50)]
    try:
        for sock in sockets:
            sock.sendall(unfinished)
        for sock in sockets:
            answer = read_answer(sock)
            assert answer is not None and answer.status == 401, answer
        for sock in sockets:
            assert closed_within(sock, LINGER + 5.0) is not None
    finally:
        for sock in sockets:
            sock.close()
    assert settled(served.fds, baseline, SOON) <= baseline


def test_connections_whose_clients_left_are_closed_at_once(server: Server) -> None:
    """Not only after an early answer: a keep-alive connection whose client
    closes it is closed on the server's side too, not left to its timer."""
    served = server.served
    baseline = settled(served.fds)
    for _ in range(REQUESTS):
        with served.connect() as sock:
            sock.sendall(request("GET", "/.well-known/oauth-authorization-server", served.host))
            answer = read_answer(sock)
            assert answer is not None and answer.status == 200
    assert settled(served.fds, baseline, SOON) <= baseline
