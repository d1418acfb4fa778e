"""The consent and error pages rendered by a real headless Chromium: a client
name that is an HTML/script injection attempt shows up as text, no element
of it is created, and no script runs."""

from __future__ import annotations

import http.server
import subprocess
import threading
from typing import Iterator

import pytest

from chromium import ARGS, require_chromium
from support import Harness
from mcp_oauth_proxy.core.http import Response

INJECTION = (
    '"><img src=x onerror="document.title=\'pwned-img\'">'
    "<script>document.title='pwned-script'</script><iframe src=\"https://example.invalid\"></iframe>"
)


@pytest.fixture
def serve() -> Iterator:
    """Serve one prepared core Response, headers and all, on loopback."""
    holder: dict[str, Response] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            response = holder["response"]
            self.send_response(response.status)
            for name, value in response.headers:
                self.send_header(name, value)
            self.send_header("content-length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def url_for(response: Response) -> str:
        holder["response"] = response
        return f"http://127.0.0.1:{server.server_address[1]}/page"

    yield url_for
    server.shutdown()
    server.server_close()


def dump_dom(url: str, tmp_path) -> str:
    """The DOM after Chromium loaded the page (and ran whatever it would run)."""
    result = subprocess.run(
        [require_chromium(), "--headless", *ARGS, f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=2000", "--dump-dom", url],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_consent_page_shows_an_injected_client_name_as_text(serve, tmp_path):
    h = Harness()
    client = h.register(client_name=INJECTION[:200])
    page = h.request("GET", h.authorize_url(client["client_id"]))
    assert page.status == 200
    dom = dump_dom(serve(page), tmp_path)
    # The title is ours: neither injected handler nor script replaced it.
    title = dom.split("<title>")[1].split("</title>")[0]
    assert title.startswith("Allow ") and title not in ("pwned-img", "pwned-script")
    # No element of the injection exists; its text is there, escaped.
    assert "<img" not in dom and "<iframe" not in dom
    assert dom.count("<script") == 0
    assert "&lt;script&gt;document.title='pwned-script'&lt;/script&gt;" in dom
    # The form works without JavaScript: a plain POST with two buttons.
    assert '<form method="post" action="https://acme.example.com/oauth/consent">' in dom
    assert dom.count('type="submit"') == 2


def test_error_page_escapes_what_it_shows(serve, tmp_path):
    from mcp_oauth_proxy.core.pages import error_page

    dom = dump_dom(serve(error_page("Sign-in failed", INJECTION)), tmp_path)
    title = dom.split("<title>")[1].split("</title>")[0]
    assert "<img" not in dom and dom.count("<script") == 0 and title == "Sign-in failed"
