"""A small identity provider on 127.0.0.1 (stdlib http.server in a thread),
OIDC-shaped (discovery, id_token, ``iss`` in the redirect) or GitHub-shaped
(no discovery, no id_token, numeric user ``id``), with fault switches.

Its authorize endpoint signs the person in at once and redirects back with a
code; its token endpoint checks the client's credentials and PKCE."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

CLIENT_ID = "local-client"
CLIENT_SECRET = "local-secret-value-1234"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims: dict[str, Any]) -> str:
    header = _b64(json.dumps({"alg": "none"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}.sig"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (the timeout tests) is expected


class LocalIdP:
    def __init__(self, shape: str = "oidc", port: int = 0) -> None:
        assert shape in ("oidc", "github")
        self.shape = shape
        # None, "500", "garbage" (invalid JSON) or "slow" (answers after `slow_seconds`).
        self.fault: str | None = None
        self.slow_seconds = 2.0
        self.expires_in = 3600
        self.codes: dict[str, dict[str, str]] = {}
        self.issued = 0
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._port = port
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def issuer(self) -> str:
        return self.url

    def start(self) -> None:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                idp._handle(self, "GET")

            def do_POST(self) -> None:
                idp._handle(self, "POST")

        self._server = _Server(("127.0.0.1", self._port), Handler)
        self._port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- endpoints ---------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        self.requests.append(parts.path)
        length = int(h.headers.get("content-length") or 0)
        body = h.rfile.read(length) if length else b""
        if parts.path == "/authorize":
            return self._authorize(h, parse_qs(parts.query))
        if self.fault == "slow":
            time.sleep(self.slow_seconds)
        if self.fault == "500":
            return self._send(h, 500, b"internal error: db password hunter2 leaked", "text/plain")
        if self.fault == "garbage":
            return self._send(h, 200, b"{not json at all", "application/json")
        if parts.path == "/.well-known/openid-configuration" and self.shape == "oidc":
            return self._json(h, 200, {
                "issuer": self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "userinfo_endpoint": f"{self.url}/userinfo",
                "authorization_response_iss_parameter_supported": True,
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            })
        if parts.path == "/token" and method == "POST":
            return self._token(h, {k: v[0] for k, v in parse_qs(body.decode()).items()})
        if parts.path in ("/userinfo", "/user"):
            return self._userinfo(h)
        self._json(h, 404, {"error": "not_found"})

    def _authorize(self, h: BaseHTTPRequestHandler, q: dict[str, list[str]]) -> None:
        params = {k: v[0] for k, v in q.items()}
        code = f"code-{len(self.codes) + 1}"
        self.codes[code] = params
        back = {"code": code, "state": params["state"]}
        if self.shape == "oidc":
            back["iss"] = self.url  # RFC 9207
        h.send_response(302)
        h.send_header("location", params["redirect_uri"] + "?" + urlencode(back))
        h.send_header("content-length", "0")
        h.end_headers()

    def _client_ok(self, h: BaseHTTPRequestHandler, form: dict[str, str]) -> bool:
        auth = h.headers.get("authorization", "")
        if auth.startswith("Basic "):
            pair = base64.b64decode(auth[6:]).decode()
            return pair == f"{CLIENT_ID}:{CLIENT_SECRET}"
        return form.get("client_id") == CLIENT_ID and form.get("client_secret") == CLIENT_SECRET

    def _token(self, h: BaseHTTPRequestHandler, form: dict[str, str]) -> None:
        if not self._client_ok(h, form):
            return self._json(h, 401, {"error": "invalid_client"})
        grant = form.get("grant_type")
        with self._lock:
            if grant == "authorization_code":
                session = self.codes.pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "")
                if session is None or _b64(hashlib.sha256(verifier.encode()).digest()) != session.get("code_challenge"):
                    return self._json(h, 400, {"error": "invalid_grant"})
            elif grant == "refresh_token":
                if not form.get("refresh_token", "").startswith("idp-rt-"):
                    return self._json(h, 400, {"error": "invalid_grant"})
                session = {}
            else:
                return self._json(h, 400, {"error": "unsupported_grant_type"})
            self.issued += 1
            n = self.issued
        answer: dict[str, Any] = {"access_token": f"idp-at-{n}", "token_type": "bearer",
                                  "refresh_token": f"idp-rt-{n}", "expires_in": self.expires_in}
        if self.shape == "oidc" and grant == "authorization_code":
            answer["id_token"] = jwt({"iss": self.url, "aud": CLIENT_ID, "sub": "user-42",
                                      "exp": int(time.time()) + 300, "nonce": session.get("nonce")})
        self._json(h, 200, answer)

    def _userinfo(self, h: BaseHTTPRequestHandler) -> None:
        if not h.headers.get("authorization", "").startswith("Bearer idp-at-"):
            return self._json(h, 401, {"error": "invalid_token"})
        if self.shape == "oidc":
            return self._json(h, 200, {"sub": "user-42", "name": "Ada"})
        self._json(h, 200, {"id": 4242, "login": "ada"})

    def _json(self, h: BaseHTTPRequestHandler, status: int, doc: dict[str, Any]) -> None:
        self._send(h, status, json.dumps(doc).encode(), "application/json")

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes, kind: str) -> None:
        h.send_response(status)
        h.send_header("content-type", kind)
        h.send_header("content-length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
