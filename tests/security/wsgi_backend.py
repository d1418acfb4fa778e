"""A WSGI backend for the forwarding attack tests, run as its own process:

    python wsgi_backend.py PORT

The standard library's wsgiref server on 127.0.0.1; every request is
answered with what a WSGI app there reads of it: its environ's CGI
variables (``HTTP_*``, ``CONTENT_*``, ``REQUEST_METHOD``, ``PATH_INFO``,
``QUERY_STRING``), as JSON; with ``?set_cookie=VALUE``, also with that
Set-Cookie. wsgiref, like most WSGI servers, maps ``-`` and
``_`` in a header name to the same ``HTTP_`` key and joins repeated ones."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server

_CGI = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    seen = {k: v for k, v in environ.items() if k.startswith("HTTP_") or k in _CGI}
    body = json.dumps(seen).encode()
    headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    cookie = parse_qs(environ.get("QUERY_STRING", "")).get("set_cookie")
    if cookie:
        headers.append(("set-cookie", cookie[0]))
    start_response("200 OK", headers)
    return [body]


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


if __name__ == "__main__":
    make_server("127.0.0.1", int(sys.argv[1]), app, handler_class=_Quiet).serve_forever()
