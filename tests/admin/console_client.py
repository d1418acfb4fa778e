"""A browser's part, for the console's tests: cookies kept, forms posted
with the CSRF token the page carried, the Origin a browser sends."""

from __future__ import annotations

import re
from html import unescape
from typing import Any
from urllib.parse import urlencode

import attrs

from mcp_oauth_proxy.admin.console import Console
from mcp_oauth_proxy.core.http import Request, Response

ORIGIN = "http://admin.test"


@attrs.define
class Browser:
    console: Console
    cookies: dict[str, str] = attrs.field(factory=dict)
    last: Response | None = None
    remote: str = "10.0.0.1"

    def _send(self, method: str, target: str, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()) -> Response:
        path, _, query = target.partition("?")
        sent = [("host", "admin.test")] + list(headers)
        if self.cookies:
            sent.append(("cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items())))
        response = self.console.handle(Request(method, path, query, sent, body, "http", "admin.test", self.remote))
        for name, value in response.headers:
            if name == "set-cookie":
                key, _, rest = value.partition("=")
                val = rest.split(";")[0]
                if "Max-Age=0" in value:
                    self.cookies.pop(key, None)
                else:
                    self.cookies[key] = val
        self.last = response
        return response

    def get(self, target: str) -> Response:
        return self._send("GET", target)

    def post(self, target: str, fields: dict[str, Any], csrf: bool = True, origin: str | None = ORIGIN) -> Response:
        fields = dict(fields)
        if csrf and "csrf" not in fields and self.last is not None:
            found = re.search(r'name="csrf" value="([^"]*)"', self.last.body.decode())
            if found:
                fields["csrf"] = unescape(found.group(1))
        headers = [("content-type", "application/x-www-form-urlencoded")]
        if origin is not None:
            headers.append(("origin", origin))
        return self._send("POST", target, urlencode(fields).encode(), tuple(headers))

    def sign_in(self, token: str) -> Response:
        self.get("/admin/sign-in")
        return self.post("/admin/sign-in", {"token": token})


def text(response: Response) -> str:
    return unescape(re.sub(r"<[^>]+>", " ", response.body.decode()))
