"""One HTTP/1.1 exchange over a plain socket, for requests no well-behaved
client would send (dot segments left in, both Content-Length and
Transfer-Encoding, a WebSocket handshake); the answer parsed by h11."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import attrs
import h11

DEADLINE = 20.0


@attrs.frozen
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def exchange(base: str, method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"") -> Answer:
    """Send the request exactly as given (plus Host and ``Connection:
    close``, unless ``headers`` names a Host or Connection), read the answer."""
    where = urlsplit(base)
    names = {name.lower() for name, _ in headers}
    head = [f"{method} {target} HTTP/1.1"]
    head += [] if "host" in names else [f"Host: {where.netloc}"]
    head += [f"{name}: {value}" for name, value in headers]
    head += [] if "connection" in names else ["Connection: close"]
    request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
    # h11 reads the answer once it believes it asked the question.
    parser = h11.Connection(h11.CLIENT)
    parser.send(h11.Request(method="HEAD" if method == "HEAD" else "GET", target="/", headers=[("Host", "x")]))
    parser.send(h11.EndOfMessage())
    response: h11.Response | None = None
    content = b""
    with socket.create_connection((where.hostname, where.port), timeout=DEADLINE) as sock:
        sock.sendall(request)
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                parser.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                content += event.data
            else:  # the end of the answer or of the connection, or a 1xx (never expected here)
                break
    assert response is not None, event
    return Answer(response.status_code, {k.decode("latin-1"): v.decode("latin-1") for k, v in response.headers},
                  content)
