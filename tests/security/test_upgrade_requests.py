"""A request that asks to upgrade to a protocol we do not speak (``h2c``,
anything but a WebSocket) is answered in HTTP/1.1 with its body read, or
refused; never answered as if its body were empty. httptools (uvicorn)
skips the body of any request with ``Connection: Upgrade`` and drops the
bytes after its head: a token request lost its form (401 invalid_client)
and a forwarded POST its body (found by a review). RFC 9110 §7.8 lets a
server ignore an upgrade; Hypercorn (h11) does, uvicorn cannot, so there
such a request with a body is refused (400) and its connection closed;
one without is answered and its connection closed, so no request sent
behind it on the connection is silently lost."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import attrs
import h11
import pytest
from processes import free_port
from served import LOOPS, Served, serve

UPGRADES = ["Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
            "Connection: Upgrade\r\nUpgrade: foo/1"]


@attrs.frozen
class Server:
    served: Served
    loop: str


@pytest.fixture(scope="module", params=LOOPS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp: Path = tmp_path_factory.mktemp(f"upgrade-{request.param}")
    with serve(tmp, request.param, port=free_port()) as served:
        yield Server(served, request.param)


def _answers(served: Served, data: bytes) -> list[tuple[h11.Response, bytes]]:
    """Every answer (and its body) to ``data``, until the server closes the
    connection or says nothing more for two seconds."""
    parser = h11.Connection(h11.CLIENT)
    found: list[tuple[h11.Response, bytes]] = []
    with served.connect() as sock:
        sock.sendall(data)
        sock.settimeout(2.0)
        while True:
            parser.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
            parser.send(h11.EndOfMessage())
            response, body = None, b""
            while True:
                event = parser.next_event()
                if event is h11.NEED_DATA:
                    try:
                        parser.receive_data(sock.recv(65536))
                    except (socket.timeout, ConnectionResetError):
                        return found
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
            if response is None:
                return found
            found.append((response, body))
            if parser.their_state is h11.MUST_CLOSE:
                return found
            parser.start_next_cycle()


@pytest.mark.parametrize("upgrade", UPGRADES)
def test_a_token_request_asking_to_upgrade_is_never_read_without_its_form(server: Server, upgrade: str) -> None:
    form = b"grant_type=urn%3Abogus&client_id=x"
    head = (f"POST /oauth/token HTTP/1.1\r\nHost: {server.served.host.decode()}\r\n{upgrade}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(form)}\r\n\r\n")
    answers = _answers(server.served, head.encode() + form)
    assert len(answers) == 1
    response, body = answers[0]
    if server.loop == "trio":  # the upgrade ignored: the form was read (an empty one "requires" authentication)
        assert response.status_code == 401 and json.loads(body)["error_description"] == "unknown client"
    else:  # refused, and said why
        assert response.status_code == 400 and b"Upgrade" in body
        assert (b"connection", b"close") in response.headers


@pytest.mark.parametrize("upgrade", UPGRADES)
def test_a_request_behind_an_upgrade_is_answered_or_its_connection_closed(server: Server, upgrade: str) -> None:
    host = server.served.host.decode()
    first = f"GET /.well-known/oauth-authorization-server HTTP/1.1\r\nHost: {host}\r\n{upgrade}\r\n\r\n"
    second = f"GET /.well-known/oauth-protected-resource/mcp HTTP/1.1\r\nHost: {host}\r\n\r\n"
    answers = _answers(server.served, (first + second).encode())
    assert [r.status_code for r, _ in answers][:1] == [200]
    if len(answers) == 1:  # the second never answered: the connection must have been closed
        assert (b"connection", b"close") in answers[0][0].headers
    else:
        assert [r.status_code for r, _ in answers] == [200, 200]
