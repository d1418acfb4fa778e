"""A backend that misbehaves on the connections the forwarder keeps: bytes
beyond its answer (a backend that miscounts its Content-Length, echoing
what one person sent), sent at once or while the connection waits for the
next request, must never become another request's answer; an answer the
server in front could not pass on is a 502, and one cut off reaches the
client cut short; one person cannot take every backend connection. A real
``serve`` on each loop, in front of a backend on a plain socket."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from processes import free_port
from served import LOOPS, seed_access_token, serve

DEADLINE = 20.0
SMUGGLED = b'{"smuggled":true}'
FAKE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(SMUGGLED),
                                                                                              SMUGGLED)


def _answer(body: bytes, extra_headers: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % len(body)
            + extra_headers + b"\r\n" + body)


class Misbehaving:
    """Answers each request by its path's last segment: ``ok`` honestly (the
    body names the request's ``probe``); ``extra`` with a second answer
    right behind (one write); ``late`` with one 0.3 s after; ``soon`` with
    one 5 ms after (while other requests are under way); ``badheader`` with
    a control character in a header value; ``switch`` with a final 101;
    ``status999`` with a status no client knows; ``notmodified`` with a 304
    that says a length; ``short`` with 3 of the 1000 bytes it declares;
    ``badchunk`` with a chunk, then a malformed chunk size, then closing;
    ``hang`` once ``gate`` is set. Connections are kept alive."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.paths: list[str] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.getsockname()[1]}/mcp"

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the proxy may close a connection it no longer trusts
            self._exchanges(conn)

    def _exchanges(self, conn: socket.socket) -> None:
        buffered = b""
        while True:
            while b"\r\n\r\n" not in buffered:
                data = conn.recv(65536)
                if not data:
                    return
                buffered += data
            head, _, buffered = buffered.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = next((int(v) for n, _, v in (line.partition(":") for line in lines[1:])
                           if n.strip().lower() == "content-length"), 0)
            while len(buffered) < length:
                buffered += conn.recv(65536)
            buffered = buffered[length:]
            target = lines[0].split(" ")[1]
            self.paths.append(urlsplit(target).path)
            if not self._answer(conn, target):
                return

    def _answer(self, conn: socket.socket, target: str) -> bool:
        parts = urlsplit(target)
        mode = parts.path.rsplit("/", 1)[-1]
        probe = parse_qs(parts.query).get("probe", [""])[0]
        genuine = _answer(b'{"probe":"%s"}' % probe.encode())
        if mode == "extra":
            conn.sendall(genuine + FAKE)
        elif mode == "late":
            conn.sendall(genuine)
            time.sleep(0.3)
            conn.sendall(FAKE)
        elif mode == "badheader":
            conn.sendall(_answer(b"{}", b"x-bad: a\x01b\r\n"))
        elif mode == "status999":
            conn.sendall(b"HTTP/1.1 999 Odd\r\ncontent-length: 0\r\n\r\n")
        elif mode == "notmodified":
            conn.sendall(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 50\r\n\r\n")
        elif mode == "switch":
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n")
            return False
        elif mode == "soon":
            conn.sendall(genuine)
            time.sleep(0.005)
            conn.sendall(FAKE)
        elif mode == "badchunk":
            conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            time.sleep(0.2)
            conn.sendall(b"zz\r\nabc")  # no chunk size, then the connection is lost
            time.sleep(0.2)
            return False
        elif mode == "short":
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nabc")
            return False
        elif mode == "hang":
            self.gate.wait(DEADLINE)
            conn.sendall(genuine)
        else:
            conn.sendall(genuine)
        return True


@pytest.fixture
def backend() -> Iterator[Misbehaving]:
    server = Misbehaving()
    yield server
    server.close()


@contextlib.contextmanager
def _serving(tmp_path: Path, loop: str, backend: Misbehaving, server: str = "",
             users: tuple[str, ...] = ("u",)) -> Iterator[tuple[str, list[str], Path]]:
    port = free_port()
    database = f"sqlite:///{tmp_path / 'proxy.db'}"
    tokens = [seed_access_token(database, tmp_path / "keys", "acme", f"http://127.0.0.1:{port}/mcp", user)
              for user in users]
    with serve(tmp_path, loop, port=port, database=database, tenant=f'backend = "{backend.url}"',
               server=server) as served:
        yield served.base, tokens, served.log


def _post(http: httpx.Client, base: str, token: str, path: str) -> httpx.Response:
    return http.post(f"{base}{path}", content=b"{}", headers={"authorization": f"Bearer {token}",
                                                               "content-type": "application/json"})


@pytest.mark.parametrize("loop", LOOPS)
def test_bytes_a_backend_sends_beyond_its_answer_never_become_the_next_answer(
        loop: str, tmp_path: Path, backend: Misbehaving) -> None:
    with _serving(tmp_path, loop, backend, users=("mallory", "victim")) as (base, (mallory, victim), log):
        with httpx.Client(trust_env=False, timeout=DEADLINE) as http:
            for mode in ("extra", "late"):
                first = _post(http, base, mallory, f"/mcp/{mode}?probe={mode}")
                assert first.status_code == 200 and first.json() == {"probe": mode}
                time.sleep(0.6)  # "late" has sent its stray answer by now
                for i in range(5):
                    answer = _post(http, base, victim, f"/mcp/ok?probe={mode}-{i}")
                    assert answer.status_code == 200, answer.text
                    assert answer.json() == {"probe": f"{mode}-{i}"}, answer.text
    assert "Traceback" not in log.read_text(errors="replace")


@pytest.mark.parametrize("loop", LOOPS)
def test_stray_bytes_reach_no_one_else_even_while_others_send(loop: str, tmp_path: Path,
                                                              backend: Misbehaving) -> None:
    """The stray answer comes a moment after the genuine one: on a pool
    shared by everyone, the connection would already carry someone else's
    request by then."""
    people = ("mallory", "v1", "v2", "v3", "v4")
    with _serving(tmp_path, loop, backend, users=people) as (base, tokens, _):
        until = time.monotonic() + 3
        wrong: list[str] = []
        answered: list[int] = []

        def victim(token: str, name: str) -> None:
            with httpx.Client(trust_env=False, timeout=DEADLINE) as http:
                i = 0
                while time.monotonic() < until:
                    answer = _post(http, base, token, f"/mcp/ok?probe={name}-{i}")
                    answered.append(answer.status_code)
                    if answer.status_code != 200 or answer.json() != {"probe": f"{name}-{i}"}:
                        wrong.append(answer.text)
                    i += 1

        def attacker(token: str) -> None:
            with httpx.Client(trust_env=False, timeout=DEADLINE) as http:
                while time.monotonic() < until:
                    _post(http, base, token, "/mcp/soon?probe=mallory")

        threads = [threading.Thread(target=attacker, args=(tokens[0],))]
        threads += [threading.Thread(target=victim, args=(token, name))
                    for token, name in zip(tokens[1:], people[1:])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE)
    assert len(answered) > 50
    assert wrong == []


@pytest.mark.parametrize("loop", LOOPS)
def test_an_answer_that_cannot_be_passed_on_is_a_502_and_one_cut_off_arrives_cut_short(
        loop: str, tmp_path: Path, backend: Misbehaving) -> None:
    with _serving(tmp_path, loop, backend) as (base, (token,), log):
        with httpx.Client(trust_env=False, timeout=DEADLINE) as http:
            for mode in ("badheader", "switch", "status999"):
                answer = _post(http, base, token, f"/mcp/{mode}")
                assert answer.status_code == 502, (mode, answer.status_code, answer.headers)
                assert answer.json()["error"] == "temporarily_unavailable"
                assert "x-bad" not in answer.headers
            for mode in ("short", "badchunk"):
                with pytest.raises(httpx.RemoteProtocolError):
                    _post(http, base, token, f"/mcp/{mode}")
            # No body, whatever length it says: nothing waited for.
            assert _post(http, base, token, "/mcp/notmodified").status_code == 304
            # A path parameter reaches the backend as sent.
            assert _post(http, base, token, "/mcp/ok;a=b?probe=p").json() == {"probe": "p"}
    assert backend.paths[-1] == "/mcp/ok;a=b"
    written = log.read_text(errors="replace")
    assert "Traceback" not in written
    # One line a minute says answers were left unfinished, not one a request.
    assert written.count("without completing response") <= 1


@pytest.mark.parametrize("loop", LOOPS)
def test_one_person_has_at_most_max_forward_per_person_requests_at_once(
        loop: str, tmp_path: Path, backend: Misbehaving) -> None:
    with _serving(tmp_path, loop, backend, server="max_forward_per_person = 2",
                  users=("hog", "other")) as (base, (hog, other), _):
        answers: list[httpx.Response] = []

        def hanging() -> None:
            with httpx.Client(trust_env=False, timeout=DEADLINE) as http:
                answers.append(_post(http, base, hog, "/mcp/hang?probe=held"))

        held = [threading.Thread(target=hanging) for _ in range(2)]
        for thread in held:
            thread.start()
        with httpx.Client(trust_env=False, timeout=DEADLINE) as http:
            deadline = time.monotonic() + DEADLINE
            while backend.paths.count("/mcp/hang") < 2:  # both reached the backend
                assert time.monotonic() < deadline
                time.sleep(0.05)
            refused = _post(http, base, hog, "/mcp/ok?probe=third")
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1", refused.text
            # Someone else is not held up by it.
            assert _post(http, base, other, "/mcp/ok?probe=other").json() == {"probe": "other"}
            backend.gate.set()
            for thread in held:
                thread.join(DEADLINE)
            assert [a.status_code for a in answers] == [200, 200]
            # Their ends counted: the person may go on.
            assert _post(http, base, hog, "/mcp/ok?probe=after").json() == {"probe": "after"}


@pytest.mark.parametrize("loop", LOOPS)
def test_a_client_at_the_cap_sending_one_request_after_another_is_never_refused(
        loop: str, tmp_path: Path, backend: Misbehaving) -> None:
    """Each connection's next request comes the moment its answer is out:
    the place it held is free by then."""
    with _serving(tmp_path, loop, backend, server="max_forward_per_person = 2") as (base, (token,), _):
        statuses: list[int] = []

        def one_after_another(name: str) -> None:
            with httpx.Client(trust_env=False, timeout=DEADLINE) as http:
                statuses.extend(_post(http, base, token, f"/mcp/ok?probe={name}-{i}").status_code
                                for i in range(40))

        threads = [threading.Thread(target=one_after_another, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE)
    assert statuses == [200] * 80, sorted(set(statuses))
