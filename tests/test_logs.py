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
