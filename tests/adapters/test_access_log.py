"""The access log's line is one line whatever a client puts in its path: a
percent-encoded newline (which the server decodes into the scope's path)
must not forge a second line (found by a review: a whole fake line, a
token grant to "victim", written by an unauthenticated GET)."""

from __future__ import annotations

import logging

import anyio
import pytest

from mcp_oauth_proxy import config as config_mod
from mcp_oauth_proxy.adapters.access_log import AccessLog
from mcp_oauth_proxy.app import build_app

FAKE = "2026-11-30 23:59:59,000 INFO mcp_oauth_proxy.access: method=POST path=/oauth/token status=200"


def _logged(path: str, raw_path: bytes | None, caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    config = config_mod.parse({"tenants": [{
        "slug": "acme", "issuer": "https://acme.example", "resource": "https://acme.example/mcp",
        "upstream": {"kind": "github", "client_id": "c", "client_secret": "s"}}]})
    served = build_app(config)
    app = AccessLog(served, served.site)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "https", "path": path, "query_string": b"", "root_path": "",
             "headers": [(b"host", b"acme.example")], "client": ("127.0.0.1", 1), "server": ("acme.example", 443)}
    if raw_path is not None:
        scope["raw_path"] = raw_path

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        pass

    with caplog.at_level(logging.INFO, logger="mcp_oauth_proxy.access"):
        anyio.run(app, scope, receive, send)
    (record,) = [r for r in caplog.records if r.name == "mcp_oauth_proxy.access"]
    return record


@pytest.mark.parametrize("where", ["/mcp/x", "/nowhere/x"])
def test_a_newline_in_the_path_does_not_make_a_second_line(where: str, caplog: pytest.LogCaptureFixture) -> None:
    record = _logged(f"{where}\n{FAKE}", f"{where}%0a{FAKE.replace(' ', '%20')}".encode(), caplog)
    line = record.getMessage()
    assert "\n" not in line and "\r" not in line
    # The path as the client sent it, still encoded.
    assert f"path={where}%0a2026-11-30%2023:59:59,000%20INFO" in line
    assert record.access["path"] == f"{where}%0a{FAKE.replace(' ', '%20')}"  # type: ignore[attr-defined]


def test_a_path_with_no_raw_path_is_encoded_as_logged(caplog: pytest.LogCaptureFixture) -> None:
    # A server that gives no raw_path: the decoded path, control characters,
    # spaces and non-ASCII encoded (as UTF-8).
    line = _logged("/a\nb c\x00d\u00e9", None, caplog).getMessage()
    assert "path=/a%0Ab%20c%00d%C3%A9 " in line


def test_raw_bytes_beyond_ascii_are_encoded(caplog: pytest.LogCaptureFixture) -> None:
    line = _logged("/caf\u00e9", b"/caf\xc3\xa9", caplog).getMessage()
    assert "path=/caf%C3%A9 " in line


def test_an_unexpected_error_names_its_path_on_one_line(caplog: pytest.LogCaptureFixture) -> None:
    from mcp_oauth_proxy.adapters.site import server_error

    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        with caplog.at_level(logging.ERROR, logger="mcp_oauth_proxy"):
            server_error(f"GET /x\n{FAKE}", exc)
    first = caplog.records[-1].getMessage().splitlines()[0]
    assert first == f"unexpected RuntimeError while answering GET /x%0A{FAKE}"


def test_a_query_logs_names_and_lengths_never_a_value() -> None:
    from mcp_oauth_proxy.adapters.access_log import redacted_query

    assert redacted_query(b"code=abc&state=12345&iss=x") == "code=3&state=5&iss=1"
    # No "=": the whole of it would be the name (a second review); logged as its length.
    assert redacted_query(b"state%3DSECRETSTATE7") == "~18=0"  # "state=SECRETSTATE7"
    assert redacted_query(b"a%0Ab=1&ok_name[]=22") == "~3=1&ok_name[]=2"


def test_the_admin_surfaces_log_a_failed_path_on_one_line(caplog: pytest.LogCaptureFixture) -> None:
    from mcp_oauth_proxy.adapters.site import loggable

    assert loggable(f"/admin/x\n{FAKE}") == f"/admin/x%0A{FAKE}"
