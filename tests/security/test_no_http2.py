"""HTTP/2, which serve does not speak: a client opening with the HTTP/2
preface (a zero flow-control window, so no answer could ever be sent; a
WebSocket CONNECT) has its connection closed at once, and leaves nothing
behind after it goes. Hypercorn's HTTP/2 held such connections for ever,
kept those its clients had left, and buffered forwarded streams without
bound. On the default server and --trio, through a real ``serve``."""

from __future__ import annotations

from typing import Iterator

import h2.config
import h2.connection
import h2.settings
import pytest
from served import LOOPS, Served, closed_within, request, read_answer, serve, settled

ROUNDS = 200


@pytest.fixture(scope="module", params=LOOPS)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(tmp_path_factory.mktemp(f"h2-{request.param}"), request.param,
               server="keep_alive_timeout = 30") as running:
        yield running


def _h2_opening(host: bytes, window: int = 0, websocket: bool = False) -> bytes:
    """The preface, SETTINGS with an initial window of ``window``, and one request."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window,
                          h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1})
    if websocket:
        headers = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"), (":path", "/mcp"),
                   (":authority", host.decode()), ("sec-websocket-version", "13")]
    else:
        headers = [(":method", "GET"), (":scheme", "http"), (":path", "/.well-known/oauth-authorization-server"),
                   (":authority", host.decode())]
    conn.send_headers(1, headers, end_stream=not websocket)
    return conn.data_to_send()


@pytest.mark.parametrize("websocket", [False, True], ids=["zero-window-get", "websocket-connect"])
def test_an_http2_client_has_its_connection_closed_at_once(served: Served, websocket: bool) -> None:
    with served.connect() as sock:
        sock.sendall(_h2_opening(served.host, websocket=websocket))
        assert closed_within(sock, 2.0) is not None


def test_http2_clients_that_come_and_go_leave_no_descriptor_behind(served: Served) -> None:
    baseline = settled(served.fds)
    for i in range(ROUNDS):
        with served.connect() as sock:
            sock.sendall(_h2_opening(served.host, websocket=bool(i % 2)))
    assert settled(served.fds, baseline) <= baseline + 2


def test_an_h2c_upgrade_is_answered_in_http1(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(request("GET", "/.well-known/oauth-authorization-server", served.host,
                             (("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
                              ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"))))
        answer = read_answer(sock)
        assert answer is not None and answer.status == 200
