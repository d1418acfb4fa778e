"""RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status
code to any HTTP/1.1 request message that lacks a Host header field and to
any request message that contains more than one Host header field line or
a Host header field with an invalid field value." The tenant is picked by
Host, so a request that names none, two, or one no URI could hold must
not be answered as if it named one; through a real ``serve`` process, on
asyncio (uvicorn) and on trio (Hypercorn, h11)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import attrs
import h11
import pytest
from processes import free_port
from served import LOOPS, Served, closed_within, read_answer, seed_access_token, serve

from mcp_oauth_proxy.serving import valid_host


@attrs.frozen
class Server:
    served: Served
    token: str
    loop: str


@pytest.fixture(scope="module", params=LOOPS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp: Path = tmp_path_factory.mktemp(f"host-{request.param}")
    port = free_port()
    database = f"sqlite:///{tmp / 'proxy.db'}"
    token = seed_access_token(database, tmp / "keys", "acme", f"http://127.0.0.1:{port}/mcp")
    with serve(tmp, request.param, port=port, database=database,
               tenant='backend = "http://127.0.0.1:9/mcp"') as served:
        yield Server(served, token, request.param)


def _exchange(served: Served, head: bytes) -> tuple[int, bool]:
    """(the status of the answer to ``head``, whether the connection was then closed)."""
    with served.connect() as sock:
        sock.sendall(head)
        answer = read_answer(sock)
        assert answer is not None, "closed without an answer"
        return answer.status, closed_within(sock, 3.0) is not None


def _head(request_line: str, *fields: str) -> bytes:
    return ("\r\n".join([request_line, *fields]) + "\r\n\r\n").encode("latin-1")


def test_a_request_with_one_host_is_answered(server: Server) -> None:
    served = server.served
    status, _ = _exchange(served, _head("GET /.well-known/oauth-authorization-server HTTP/1.1",
                                        f"Host: 127.0.0.1:{served.port}"))
    assert status == 200


@pytest.mark.parametrize("path", ["/mcp", "/.well-known/oauth-authorization-server", "/oauth/token"])
def test_an_http11_request_without_host_is_refused(server: Server, path: str) -> None:
    served, token = server.served, server.token
    status, closed = _exchange(served, _head(f"GET {path} HTTP/1.1", f"Authorization: Bearer {token}"))
    assert status == 400
    assert closed


@pytest.mark.parametrize("second", ["{same}", "elsewhere.test"])
def test_two_host_lines_are_refused(server: Server, second: str) -> None:
    served, token = server.served, server.token
    host = f"127.0.0.1:{served.port}"
    # The token is good for the first host: it must not be let through.
    status, closed = _exchange(served, _head("GET /mcp HTTP/1.1", f"Host: {host}",
                                             f"Authorization: Bearer {token}",
                                             "Host: " + second.format(same=host)))
    assert status == 400
    assert closed


def test_two_host_lines_are_refused_in_http10_too(server: Server) -> None:
    served = server.served
    host = f"127.0.0.1:{served.port}"
    status, _ = _exchange(served, _head("GET /.well-known/oauth-authorization-server HTTP/1.0",
                                        f"Host: {host}", f"Host: {host}"))
    assert status == 400


def test_an_http10_request_may_leave_host_out(server: Server) -> None:
    served = server.served
    # RFC 9112 §3.2 asks Host of HTTP/1.1 only: not refused as malformed
    # (the tenant is then picked by the address the server listens on).
    status, _ = _exchange(served, _head("GET /.well-known/oauth-authorization-server HTTP/1.0"))
    assert status != 400


@pytest.mark.parametrize("value", ["127.0.0.1:{port}/mcp", "user@127.0.0.1:{port}", "127.0.0.1 :{port}",
                                   "127.0.0.1:{port}x", "[::1", "a\"b"])
def test_a_host_no_uri_could_hold_is_refused(server: Server, value: str) -> None:
    served, token = server.served, server.token
    status, _ = _exchange(served, _head("GET /mcp HTTP/1.1", "Host: " + value.format(port=served.port),
                                        f"Authorization: Bearer {token}"))
    assert status == 400


@pytest.mark.parametrize("value", ["example.com", "example.com:443", "127.0.0.1", "[::1]:8000", "[v1.x]",
                                   "xn--bcher-kva.example", "a%2Eb", "", "host:"])
def test_hosts_a_uri_could_hold(value: str) -> None:
    assert valid_host(value.encode())


@pytest.mark.parametrize("value", ["a b", "a/b", "a@b", "a?b", "a#b", "[::1", "::1", "a:b:c", "host:8x",
                                   "[::1]x", "a%zz", "é.example"])
def test_hosts_no_uri_could_hold(value: str) -> None:
    assert not valid_host(value.encode())


def test_a_refusal_pipelined_behind_a_request_waits_its_turn(server: Server) -> None:
    served = server.served
    good = _head("GET /.well-known/oauth-authorization-server HTTP/1.1", f"Host: 127.0.0.1:{served.port}")
    bad = _head("GET /.well-known/oauth-authorization-server HTTP/1.1")
    with served.connect() as sock:
        sock.sendall(good + bad + good)
        statuses = [answer.status_code for answer in _answers(sock)]
    # The first answered whole, then the refusal; nothing after it: the connection ends.
    assert statuses == [200, 400]


def _answers(sock: socket.socket) -> list[h11.Response]:
    """Every answer read off ``sock`` until the server closes it."""
    parser = h11.Connection(h11.CLIENT)
    answers: list[h11.Response] = []
    sock.settimeout(5.0)
    while True:
        parser.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        parser.send(h11.EndOfMessage())
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                parser.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                answers.append(event)
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        if isinstance(event, h11.ConnectionClosed) or parser.their_state is h11.MUST_CLOSE:
            return answers
        parser.start_next_cycle()


def test_an_absolute_target_names_the_host_not_the_host_field(server: Server) -> None:
    # RFC 9112 §3.2.2: an origin server MUST ignore Host for an absolute-form
    # target and use the target's host. The token is for 127.0.0.1's
    # tenant; the target names localhost, where no tenant is served.
    served, token = server.served, server.token
    status, _ = _exchange(served, _head(f"GET http://localhost:{served.port}/mcp HTTP/1.1",
                                        f"Host: 127.0.0.1:{served.port}", f"Authorization: Bearer {token}",
                                        "Connection: close"))
    assert status == 404
    # And the other way round: the target's host is the tenant's.
    status, _ = _exchange(served, _head(f"GET http://127.0.0.1:{served.port}/mcp HTTP/1.1",
                                        f"Host: localhost:{served.port}", f"Authorization: Bearer {token}",
                                        "Connection: close"))
    assert status in (200, 502)


@pytest.mark.parametrize("value", ["127.0.0.1:{port} ", " 127.0.0.1:{port}", "\t127.0.0.1:{port}\t"])
def test_whitespace_around_the_host_is_not_part_of_it(server: Server, value: str) -> None:
    # RFC 9112 §5: a field value excludes the whitespace around it.
    status, _ = _exchange(server.served, _head("GET /.well-known/oauth-authorization-server HTTP/1.1",
                                               "Host: " + value.format(port=server.served.port)))
    assert status == 200


def test_a_later_http1_version_needs_a_host_too(server: Server) -> None:
    # RFC 9112 §2.5: read as the highest 1.x we speak, 1.1, which needs Host.
    status, _ = _exchange(server.served, _head("GET /.well-known/oauth-authorization-server HTTP/1.2"))
    assert status == 400


@pytest.mark.parametrize("target", ["foo://localhost:{port}/mcp", "ws://localhost:{port}/mcp",
                                    "http://127.0.0.1:{port}@localhost:{port}/mcp", "localhost:{port}"])
def test_a_target_no_origin_server_reads_is_refused(server: Server, target: str) -> None:
    served, token = server.served, server.token
    status, _ = _exchange(served, _head(f"GET {target.format(port=served.port)} HTTP/1.1",
                                        f"Host: 127.0.0.1:{served.port}", f"Authorization: Bearer {token}"))
    # Never the tenant Host names, the token let through: refused.
    assert status == 400


def test_an_http10_absolute_target_without_host_is_routed_by_its_host(server: Server) -> None:
    served, token = server.served, server.token
    status, _ = _exchange(served, _head(f"GET http://localhost:{served.port}/mcp HTTP/1.0",
                                        f"Authorization: Bearer {token}"))
    assert status == 404  # localhost serves no tenant; the token is 127.0.0.1's
