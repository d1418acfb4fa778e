"""One line per request (``server.access_log = true``), that leaks nothing:
authorization URLs carry codes and state, so every query value is replaced
by its length; no header, cookie or body is logged. The path is the one
the client sent, still percent-encoded, with anything but visible ASCII
encoded too: decoded, a client's ``%0a`` would end the line and begin a
forged one. The line names the
tenant (picked by host and path, as the request was routed) and, once the
guard has let a request in, the client it let in. With ``--log-json`` the
fields are the JSON line's own (logs.JsonLines)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import parse_qsl, quote_from_bytes

from .asgi import ASGIApp, Receive, Scope, Send
from .site import ACCESS_NOTE_KEY, Site

log = logging.getLogger("mcp_oauth_proxy.access")


# A parameter's name as logged; any other "name" (``?state%3DSECRET`` has
# no "=", so the whole of it is the name) is logged as its length.
_NAME = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,64}")


def redacted_query(raw: bytes) -> str:
    """Each value replaced by its length: ``code=43&state=22``; a name
    that is not one, as ``~`` and its length."""
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    return "&".join(f"{name if _NAME.fullmatch(name) else f'~{len(name)}'}={len(value)}" for name, value in pairs)


# What a logged path keeps as it is: visible ASCII but the space.
_PATH_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


def logged_path(scope: Scope) -> str:
    """The request's path as sent (a server that gives no ``raw_path``: the
    decoded path, encoded again as UTF-8), never a control character."""
    raw = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
    return quote_from_bytes(raw, safe=_PATH_SAFE)


class AccessLog:
    def __init__(self, app: ASGIApp, site: Site) -> None:
        self.app = app
        self.site = site

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        note: dict[str, Any] = {}
        scope = dict(scope)
        scope[ACCESS_NOTE_KEY] = note
        answer = {"status": 0, "bytes": 0}

        async def counting(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            self._line(scope, note, answer["status"], answer["bytes"], time.monotonic() - started)

    def _line(self, scope: Scope, note: dict[str, Any], status: int, sent: int, seconds: float) -> None:
        host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
        path = scope.get("path", "")
        entry = self.site.pick_at(scope.get("scheme", "http"), host, path) if host else None
        fields = {
            "method": scope.get("method", ""), "path": logged_path(scope),
            "query": redacted_query(scope.get("query_string", b"")),
            "status": status, "duration_ms": round(seconds * 1000, 1), "bytes": sent,
            "tenant": entry.tenant.slug if entry else None, "client_id": note.get("client_id"),
        }
        text = " ".join(f"{k}={v}" for k, v in fields.items() if v not in (None, ""))
        log.info("%s", text, extra={"access": fields})
