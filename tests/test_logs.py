import json
import logging

from mcp_oauth_proxy.core.effects import Audit
from mcp_oauth_proxy.logs import JsonLines, configure_logging
from mcp_oauth_proxy.runtime import log_audit


def test_audit_events_become_one_json_object_per_line(capsys):
    configure_logging("info", json_lines=True)
    try:
        log_audit(Audit("tokens_issued", "acme", "mcp_client_x", "user-1", (("grant_id", "g1"),)))
        logging.getLogger("other").warning("plain message")
    finally:
        logging.getLogger().handlers[:] = []
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["event"] == "tokens_issued" and lines[0]["tenant"] == "acme"
    assert lines[0]["client_id"] == "mcp_client_x" and lines[0]["user_id"] == "user-1" and lines[0]["grant_id"] == "g1"
    assert lines[0]["logger"] == "mcp_oauth_proxy.audit" and lines[0]["level"] == "info"
    assert lines[1]["message"] == "plain message" and lines[1]["level"] == "warning"


def test_exceptions_are_kept_in_the_json_line():
    formatter = JsonLines()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    assert "RuntimeError: boom" in json.loads(formatter.format(record))["exception"]


def test_a_throttled_line_is_written_once_per_interval_counting_the_others(caplog):
    from mcp_oauth_proxy.logs import Throttled

    now = [100.0]
    note = Throttled(logging.getLogger("throttled"), logging.INFO, interval=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="throttled"):
        for t in (100.0, 101.0, 159.0, 160.0, 161.0, 300.0):
            now[0] = t
            note("bad input from %s", "1.2.3.4")
    assert [r.getMessage() for r in caplog.records] == [
        "bad input from 1.2.3.4",
        "bad input from 1.2.3.4 (and 2 more like it since the last such line)",
        "bad input from 1.2.3.4 (and 1 more like it since the last such line)",
    ]


def test_another_librarys_lines_through_a_throttle_share_its_interval_and_count(caplog):
    from mcp_oauth_proxy.logs import Throttled

    now = [100.0]
    note = Throttled(logging.getLogger("throttled"), logging.INFO, interval=60.0, clock=lambda: now[0])
    theirs = logging.getLogger("throttled.theirs")
    theirs.addFilter(note)
    try:
        with caplog.at_level(logging.INFO, logger="throttled"):
            for t, line in ((100.0, theirs.warning), (101.0, note), (102.0, theirs.warning), (160.0, theirs.warning)):
                now[0] = t
                line("Invalid HTTP request received.")
    finally:
        theirs.removeFilter(note)
    assert [r.getMessage() for r in caplog.records] == [
        "Invalid HTTP request received.",
        "Invalid HTTP request received. (and 2 more like it since the last such line)",
    ]


def test_the_http_client_never_logs_request_urls(capsys):
    level = logging.getLogger().level
    configure_logging("debug")
    try:
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).info("HTTP Request: GET http://backend/mcp?session=secret")
    finally:
        logging.getLogger().handlers[:] = []
        logging.getLogger().setLevel(level)
    assert "secret" not in capsys.readouterr().err
