"""A real HTTPS server on loopback, with a self-signed certificate the tests
trust, serving canned answers (client metadata documents), quickly or a
byte at a time."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import ssl
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support import REDIRECT


def self_signed(tmp_path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


class Drips:
    """What a dripping server has done: the connections it is dripping to
    now, the most at once, and (bytes sent, bytes in all) of each ended drip."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.ended: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    def drip(self, write, answer: bytes, interval: float) -> None:
        """Send ``answer`` a byte every ``interval`` seconds until it is all
        sent or the client has gone (a write fails)."""
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        sent = 0
        try:
            for i in range(len(answer)):
                write(answer[i:i + 1])
                sent += 1
                time.sleep(interval)
        except OSError:
            pass
        finally:
            with self._lock:
                self.now -= 1
                self.ended.append((sent, len(answer)))

    def cut_off(self) -> list[tuple[int, int]]:
        """The drips that ended before their whole answer was sent."""
        with self._lock:
            return [(sent, total) for sent, total in self.ended if sent < total]


class DocumentServer:
    """Serves ``routes[path] = (status, headers, body)`` over HTTPS and counts
    hits; with ``drip`` set, every answer (status line, headers and body) is
    sent a byte at a time, that many seconds apart."""

    def __init__(self, cert: str, key: str) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.hits: dict[str, int] = {}
        self.drip: float | None = None
        self.drips = Drips()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                status, headers, body = server.routes.get(self.path, (404, {}, b""))
                head = f"HTTP/1.1 {status} Canned\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                answer = (head + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body
                self.close_connection = True
                if server.drip is None:
                    self.wfile.write(answer)
                else:
                    server.drips.drip(self.wfile.write, answer, server.drip)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.cert = cert
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "localhost") -> str:
        return f"https://{host}:{self.port}{path}"

    def trust(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cert)


def serve_document(server: DocumentServer, path: str = "/client.json", cache_control: str = "max-age=300",
                   **over: object) -> str:
    """Serve a good client metadata document at ``path``; its URL (the client_id)."""
    url = server.url(path)
    doc = {"client_id": url, "client_name": "Loopback Doc Client", "redirect_uris": [REDIRECT],
           "grant_types": ["authorization_code", "refresh_token"], "token_endpoint_auth_method": "none",
           "application_type": "native", **over}
    server.routes[path] = (200, {"content-type": "application/json", "cache-control": cache_control},
                           json.dumps(doc).encode())
    return url
